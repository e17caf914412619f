"""A non-editable install (a built wheel) carries the configs, so `pivad demo` finds its config there."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_configs_and_demo_finds_them(tmp_path):
    pytest.importorskip("setuptools")
    tree = tmp_path / "tree"  # a copy: building writes build/ and *.egg-info beside the sources
    for part in ("src", "configs"):
        shutil.copytree(ROOT / part, tree / part, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, tree / part)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, cwd=tmp_path)
    if build.returncode:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1:]}")
    wheel = next((tmp_path / "wheel").glob("pivad-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("demo.yaml", "ucf_crime.yaml", "xd_violence.yaml", "msad.yaml", "pel4vad_ucf.yaml", "pel4vad_xd.yaml",
                 "rtfm_ucf.yaml", "rtfm_xd.yaml", "demo_pel4vad.yaml", "demo_rtfm.yaml"):
        assert f"pivad/configs/{name}" in names
    for name in ("ucf-prompt.npy", "xd-prompt.npy", "sh-prompt.npy", "LICENSE", "ORIGIN.md"):
        assert f"pivad/prompts/{name}" in names  # PEL4VAD's class prompts with their MIT licence
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    probe = ("import pivad, pivad.commands.demo as d, pathlib; "
             f"assert pathlib.Path(pivad.__file__).is_relative_to({str(site)!r}), pivad.__file__; "
             "from pivad.config import load_config; print(load_config(d.REPO_CONFIG).train.model)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "pivad"
