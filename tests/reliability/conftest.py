"""Helpers of the reliability battery: a tiny copy of the sample and a snapshot of what lies
outside the run folder, to check that a refused input changed nothing there."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphwsss.cli import main

FAST = ["propagator.epochs_first=2", "propagator.epochs_second=2", "device=cpu"]


def set_split(root: Path, lines: list[str]) -> Path:
    """Replace ``ImageSets/Segmentation/train.txt`` with ``lines``; return its path."""
    path = root / "ImageSets" / "Segmentation" / "train.txt"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``root`` (``(0, 0)`` for a
    folder: creating the run folder inside one changes its time) except ``skip``."""
    return {str(path.relative_to(root)): ((0, 0) if path.is_dir() and not path.is_symlink()
                                          else (path.lstat().st_size, path.lstat().st_mtime_ns))
            for path in sorted(root.rglob("*"))
            if path != skip and skip not in path.parents}


def error_line(err: str) -> str:
    """The one ``graphwsss:`` line of a failed command's stderr (progress bars and log lines
    may precede it); no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("graphwsss:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def run_cli(tmp_path, capsys):
    """``run_cli(data, *args)``: ``graphwsss run`` into ``<tmp>/work/run`` with box supervision;
    returns ``(exit code, the error line, run folder)`` and checks nothing outside the run folder
    (anywhere under ``tmp_path``, the data set included) changed."""

    def call(data: Path, *args: str, supervision: str = "box", out: Path | None = None):
        out = out or tmp_path / "work" / "run"
        out.parent.mkdir(parents=True, exist_ok=True)
        before = snapshot(tmp_path, out)
        code = main(["run", "--data", str(data), "--supervision", supervision,
                     "--out", str(out), *FAST, *args])
        err = capsys.readouterr().err
        assert snapshot(tmp_path, out) == before, "files outside the run folder changed"
        return code, error_line(err) if code else err, out

    return call
