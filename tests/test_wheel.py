"""The wheel works away from the repository (issue 15.3): ``pip wheel`` builds it, it installs
into a fresh venv, and there ``graphwsss demo`` runs on the sample inside the wheel and
``graphwsss run --config box_voc`` finds the packaged config by name.

No network: the wheel is built without build isolation (setuptools of this environment) and
installed with ``--no-deps``; the fresh venv sees this environment's packages (torch, ...)
through a ``.pth`` line naming its site-packages. That line adds the folder to ``sys.path``
without running its ``.pth`` files, so the repository's editable install stays invisible and
``import graphwsss`` must find the installed wheel, which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["limit=1", "propagator.epochs_first=1", "propagator.epochs_second=1",
        "crf.enabled=false", "device=cpu"]


def _call(args, cwd, env, timeout=300):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")

    # Build from a copy of the sources, so that the build leaves nothing in the repository.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "graphwsss", source / "graphwsss",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _call([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
           "--no-build-isolation", "-w", str(dist), "-q"], cwd=tmp_path, env=env)
    wheels = list(dist.glob("graphwsss-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "graphwsss/configs/box_voc.yaml" in names
    assert "graphwsss/sample_data/msrc-sample/points.json" in names
    assert any(name.startswith("graphwsss/sample_data/msrc-sample/JPEGImages/") for name in names)

    venv = tmp_path / "venv"
    _call([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    packages = Path(_call([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          cwd=tmp_path, env=env).stdout.strip())
    (packages / "host_environment.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    _call([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
           "--no-index", "-q", str(wheels[0])], cwd=tmp_path, env=env)

    work = tmp_path / "elsewhere"                    # cwd outside the repository
    work.mkdir()
    located = _call([str(python), "-c", "import graphwsss, graphwsss.cli as c; "
                     "print(graphwsss.__file__); print(c.SAMPLE_DATA)"], cwd=work, env=env)
    installed, sample = located.stdout.split()
    assert Path(installed).is_relative_to(venv) and Path(sample).is_relative_to(venv)

    graphwsss = str(venv / "bin" / "graphwsss")
    assert "settings" in _call([graphwsss, "--help"], cwd=work, env=env).stdout
    _call([graphwsss, "demo", "--out", "demo", *TINY], cwd=work, env=env)
    metrics = json.loads((work / "demo" / "metrics.json").read_text())
    assert metrics["images"] == 1 and 0 < metrics["miou"] <= 100
    assert (work / "demo" / "pseudo_labels").is_dir()

    _call([graphwsss, "run", "--config", "box_voc", "--data", sample, "--supervision", "box",
           "--out", "run", *TINY], cwd=work, env=env)
    # No box_voc file here: the name resolved to graphwsss/configs/box_voc.yaml in the venv.
    assert not list(work.glob("box_voc*"))
    assert json.loads((work / "run" / "metrics.json").read_text())["images"] == 1
