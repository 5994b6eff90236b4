import pytest

from graphwsss.utils import atomic_path, atomic_write


def test_atomic_write_replaces_whole_file(tmp_path):
    path = atomic_write(tmp_path / "out" / "a.txt", "first")
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_failed_write_keeps_previous_content_and_leaves_no_temporary(tmp_path):
    path = atomic_write(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_temporary_keeps_suffix_for_format_detection(tmp_path):
    with atomic_path(tmp_path / "x.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"")
