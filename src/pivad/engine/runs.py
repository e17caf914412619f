"""Run directories: ``<out_dir>/<model>/<dataset>/v<N>/`` with a ``latest`` link beside them.

A run directory holds ``config.yaml`` (the resolved config), ``last.pt`` / ``best.pt`` (and
``teacher.pt`` for π-VAD runs), ``log.jsonl``, ``metrics.json``, ``plots/`` and ``scores/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pivad.errors import ConfigError

_VERSION = re.compile(r"^v(\d+)$")


def _versions(parent: Path) -> list[int]:
    if not parent.is_dir():
        return []
    return sorted(int(m.group(1)) for p in parent.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir())


def update_latest(run_dir: Path) -> None:
    """Point ``<parent>/latest`` at ``run_dir`` (relative link, replaced atomically)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, link)
    except OSError:  # filesystems without symlinks: the run still works, only the convenience link is missing
        if tmp.is_symlink():
            tmp.unlink()


def new_run_dir(out_dir: str | Path, model: str, dataset: str) -> Path:
    """Create the next free ``v<N>`` folder (race-safe) and point ``latest`` at it."""
    parent = Path(out_dir) / model / dataset
    parent.mkdir(parents=True, exist_ok=True)
    n = (_versions(parent) or [-1])[-1] + 1
    while True:
        run_dir = parent / f"v{n}"
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            n += 1
    update_latest(run_dir)
    return run_dir


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder (or a ``latest`` link to one) that holds ``config.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such run directory")
    run_dir = path.resolve()
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{path}: not a run directory (no config.yaml)")
    return run_dir
