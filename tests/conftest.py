"""Shared fixtures: the bundled sample, the shared data sets (skipped when absent), tiny sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import graphwsss  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "graphwsss" / "sample_data" / "msrc-sample"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The bundled 12-image MSRC sample (read-only: copy it before changing anything)."""
    return SAMPLE


def shared_set(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not (path / "JPEGImages").is_dir():
        pytest.skip(f"shared data set {path} is absent")
    return path


@pytest.fixture
def single_thread():
    """One torch thread for tests of tiny tensors: OpenMP hand-offs cost more than they save on
    a busy 2-core machine (use with ``pytest.mark.usefixtures("single_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled sample, for tests that break files on purpose."""
    target = tmp_path / "sample"
    shutil.copytree(SAMPLE, target)
    return target
