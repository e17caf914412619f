"""Output locations checked before any work starts, so that a long run never ends in a write error.

A folder may exist (as a folder) or not yet; its nearest existing ancestor must be a folder this
process can create files in, which is tried for real (a temporary file, removed at once), since
permission bits do not tell the whole story (root, ACLs, read-only mounts). The trial file holds one
byte, so a full disk fails there too; where a command knows how much it will write,
:func:`check_free_space` compares that with the space left before any work starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pivad.errors import PivadError
from pivad.io import disk_problem


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _try_write(folder: Path, shown: Path) -> None:
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pivad-write-check-", dir=folder)
        try:
            os.write(fd, b"\0")
            os.fsync(fd)
        finally:
            os.close(fd)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        if isinstance(exc, PermissionError):
            reason = "no permission to write there"
        else:
            reason = disk_problem(exc) or exc.strerror or str(exc)
        raise PivadError(f"{shown}: cannot write output here ({reason})") from None
    finally:
        if tmp is not None:
            os.unlink(tmp)
    if free <= 0:
        raise PivadError(f"{shown}: cannot write output here (no space left on device)")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def check_free_space(path: str | Path, need: int, what: str = "") -> None:
    """PivadError unless the file system that will hold ``path`` (a folder or file, existing or not) has
    ``need`` bytes free; ``what`` says what needs them (e.g. "features of 12 videos")."""
    path = Path(path)
    base = _nearest_existing(path)
    try:
        free = shutil.disk_usage(base if base.is_dir() else base.parent).free
    except OSError:
        return  # cannot tell: the writes themselves will say (pivad.io turns a full disk into one line)
    if need > free:
        for_what = f" for {what}" if what else ""
        raise PivadError(f"{path}: not enough free space: needs {_size(need)}{for_what}, {_size(free)} free")


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as an output folder: an existing folder, or one that can be created; PivadError otherwise."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise PivadError(f"{path}: {flag} names an existing file, not a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise PivadError(f"{path}: {flag} lies under {base}, which is a file, not a folder")
    _try_write(base, path)
    return path


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as an output file: not a folder, in a folder that exists or can be created and written to."""
    path = Path(path)
    if path.is_dir():
        raise PivadError(f"{path}: {flag} names a folder; give a file name")
    check_output_dir(path.parent if str(path.parent) else Path("."), flag)
    return path
