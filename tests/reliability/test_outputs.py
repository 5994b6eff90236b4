"""Output files get the user's umask; ``--out`` naming a file is refused in one line; Ctrl-C
ends ``graphwsss run`` with one line saying that rerunning resumes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import graphwsss.stages.run
from graphwsss.cli import main
from graphwsss.utils import io
from tests.conftest import REPO
from tests.reliability.conftest import error_line

WRITE_BOTH = """
import os, stat, sys
from graphwsss.utils.io import atomic_path, atomic_write
folder = sys.argv[1]
atomic_write(os.path.join(folder, "a.json"), "{}")
with atomic_path(os.path.join(folder, "b.png")) as tmp:
    tmp.write_bytes(b"png")
print(" ".join(oct(stat.S_IMODE(os.stat(os.path.join(folder, n)).st_mode)) for n in ("a.json", "b.png")))
"""


def _modes_under_umask(umask, folder):
    result = subprocess.run([sys.executable, "-c", WRITE_BOTH, str(folder)], cwd=REPO,
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: os.umask(umask))
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_atomic_writes_get_0644_under_umask_022(tmp_path):
    (tmp_path / "a").mkdir()
    assert _modes_under_umask(0o022, tmp_path / "a") == ["0o644", "0o644"]
    (tmp_path / "b").mkdir()
    assert _modes_under_umask(0o077, tmp_path / "b") == ["0o600", "0o600"]


def test_atomic_write_mode_follows_this_process_umask(tmp_path):
    current = os.umask(0o022)
    os.umask(current)
    path = io.atomic_write(tmp_path / "x.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current == io.FILE_MODE


def test_out_that_is_a_file_is_refused(sample_root, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code = main(["run", "--data", str(sample_root), "--supervision", "box", "--out",
                 str(target), "device=cpu"])
    err = error_line(capsys.readouterr().err)
    assert code == 2
    assert err == f"graphwsss: error: {target}: --out must name a run folder, but this is an " \
                  "existing file"
    assert target.read_text() == "keep me"
    code = main(["run", "--data", str(sample_root), "--supervision", "box", "--out",
                 str(target / "run"), "device=cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{target}: --out must name a run folder" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def test_ctrl_c_ends_with_one_line_about_resuming(sample_root, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(graphwsss.stages.run, "run", interrupted)
    code = main(["run", "--data", str(sample_root), "--supervision", "box", "--out",
                 str(tmp_path / "run"), "device=cpu"])
    line = error_line(capsys.readouterr().err)
    assert code == 130
    assert line == "graphwsss: interrupted; run the same command again to resume where it stopped"
