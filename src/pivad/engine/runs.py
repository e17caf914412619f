"""Run directories: ``<out_dir>/<model>/<dataset>/v<N>/`` with a ``latest`` link beside them.

A run directory holds ``config.yaml`` (the resolved config), ``last.pt`` / ``best.pt`` (and
``teacher.pt`` for π-VAD runs), ``log.jsonl``, ``metrics.json``, ``plots/`` and ``scores/``; while a
process writes it, also ``.pivad.lock`` (:func:`run_lock`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import IO, Iterator

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
LOCK_FILE = ".pivad.lock"
_OWN_ENTRIES = {"config.yaml", "log.jsonl", "tb", LOCK_FILE}  # what a run writes before its first checkpoint


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


# ------------------------------------------------------------------------------------------------ lock

_held: dict[Path, list] = {}  # run folder (resolved) -> [lock file, depth]: this process's locks


def _try_lock(run_dir: Path, shown: str | Path) -> IO[str] | None:
    """Open ``run_dir``'s lock file and take its exclusive advisory lock without waiting; the open file
    (which holds the lock), or None where the filesystem has no locks."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no advisory locks on this platform
        return None
    path = run_dir / LOCK_FILE
    for _ in range(10):
        try:
            f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open as the lock
        except OSError as exc:
            raise ConfigError(f"{shown}: cannot lock the run folder ({exc.strerror or exc})") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read(32).strip()
            f.close()
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise ConfigError(f"{shown}: run folder in use by {who}; wait for it to end, or write elsewhere"
                              ) from None
        except OSError as exc:  # e.g. a network filesystem without flock: go on unlocked, and say so
            f.close()
            print(f"pivad: warning: {shown}: cannot lock the run folder ({exc.strerror or exc}); a second "
                  "process writing it would not be stopped", file=sys.stderr)
            return None
        try:
            same = os.path.samestat(os.fstat(f.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:  # not a file the previous holder unlinked on its way out
            f.truncate(0)
            f.write(f"{os.getpid()}\n")
            f.flush()
            return f
        f.close()
    raise ConfigError(f"{shown}: cannot lock the run folder (its lock file keeps changing)")  # pragma: no cover


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir``'s advisory lock (``fcntl.flock`` on ``.pivad.lock`` inside it) for the block: a
    second process that asks for it gets a :class:`ConfigError` at once. The kernel releases the lock
    when the process dies, so a killed run can be resumed. Re-entrant within one process. The folder is
    made if needed (and removed again if it is left empty); the lock file is removed on the way out."""
    key = Path(run_dir).resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    made = not key.is_dir()
    try:
        key.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot make the run folder ({exc.strerror or exc})") from None
    try:
        f = _try_lock(key, run_dir)
    except ConfigError:
        if made:
            key.rmdir()
        raise
    _held[key] = [f, 1]
    try:
        yield
    finally:
        del _held[key]
        if f is not None:
            with contextlib.suppress(OSError):
                (key / LOCK_FILE).unlink()  # still holding it: nobody can take the unlinked file meanwhile
            f.close()
        if made:
            with contextlib.suppress(OSError):
                key.rmdir()  # made here and left empty


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run folder (holds ``config.yaml``)."""
    return (Path(path) / "config.yaml").is_file()
