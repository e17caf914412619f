"""Run directories: ``<out_dir>/<model>/<dataset>/v<N>/`` with a ``latest`` link beside them.

A run directory holds ``config.yaml`` (the resolved config), ``last.pt`` / ``best.pt`` (and
``teacher.pt`` for π-VAD runs), ``log.jsonl``, ``metrics.json``, ``plots/`` and ``scores/``.
"""

from __future__ import annotations

import os
import re
import shutil
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


def new_run_dir(out_dir: str | Path, model: str, dataset: str, *, link: bool = True) -> Path:
    """Create the next free ``v<N>`` folder (race-safe) and, with ``link``, point ``latest`` at it
    (training leaves ``link`` off and calls :func:`finish_run` once the run holds a checkpoint)."""
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
    if link:
        update_latest(run_dir)
    return run_dir


CHECKPOINTS = ("teacher.pt", "best.pt", "last.pt")
_OWN_ENTRIES = {"config.yaml", "log.jsonl", "tb"}  # what a run writes before its first checkpoint


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / name).is_file() for name in CHECKPOINTS)


def finish_run(run_dir: Path, created: bool) -> None:
    """After training (finished, interrupted or failed): point ``latest`` at ``run_dir`` when it holds a
    checkpoint; otherwise remove it if this run ``created`` it and it holds only what the run wrote."""
    if has_checkpoint(run_dir):
        update_latest(run_dir)
    elif created and run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= _OWN_ENTRIES:
        shutil.rmtree(run_dir, ignore_errors=True)


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder (or a ``latest`` link to one) that holds ``config.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such run directory")
    run_dir = path.resolve()
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{path}: not a run directory (no config.yaml)")
    return run_dir
