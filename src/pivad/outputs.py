"""Output locations checked before any work starts, so that a long run never ends in a write error.

A folder may exist (as a folder) or not yet; its nearest existing ancestor must be a folder this
process can create files in, which is tried for real (a temporary file, removed at once), since
permission bits do not tell the whole story (root, ACLs, read-only mounts).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pivad.errors import PivadError


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _try_write(folder: Path, shown: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pivad-write-check-", dir=folder)
    except OSError as exc:
        reason = "no permission to write there" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        raise PivadError(f"{shown}: cannot write output here ({reason})") from None
    os.close(fd)
    os.unlink(tmp)


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
