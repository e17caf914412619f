"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A write that fails because the disk is full, over quota or read-only leaves no temporary file behind
and becomes a :class:`~pivad.errors.DiskError` naming the target (``<file>: no space left on device``).
Also :func:`json_safe` (strict JSON of non-finite values) and :func:`not_regular`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pivad.errors import DataError, DiskError


# errno -> the problem as the one-line error says it: the disk, not the input, is at fault
DISK_PROBLEMS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}


def disk_problem(exc: BaseException) -> str | None:
    """What :data:`DISK_PROBLEMS` says of ``exc`` (an OSError of a full, over-quota or read-only disk), else None."""
    return DISK_PROBLEMS.get(getattr(exc, "errno", None)) if isinstance(exc, OSError) else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    ``suffix`` keeps an extension on the temporary name for writers that insist on one
    (``np.save`` appends ``.npy``, matplotlib picks the format from it).
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if (problem := disk_problem(exc)) is None:
            raise
        raise DiskError(f"{path}: {problem}") from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Strict JSON (no bare ``NaN``/``Infinity``: ``ValueError``); callers turn a non-finite value into an
    error, or into ``null`` where a number is legitimately undefined, before writing."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` as strict JSON can hold it: NaN/Inf -> None (a value that is undefined, such as an AUC with
    one class), numpy scalars -> numbers, tuples -> lists, keys -> strings, any other object -> its text."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()  # numpy scalar, one-element array or tensor
        except (ValueError, RuntimeError):  # more elements: kept as text
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def atomic_save_npy(path: str | Path, array: Any) -> None:
    """``np.save`` through a temporary file (the target keeps its exact name)."""
    import numpy as np

    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)  # through a Python file: a full disk is an OSError (ENOSPC), not an opaque RuntimeError


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` (following links) exists but is not a regular file to read, or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
    link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    return f"not a regular file: {kind}{link}"


def read_text_file(path: str | Path, what: str, encoding: str = "utf-8") -> str:
    """The text of a file the user names (a list, annotations, a CSV); DataError naming ``path`` when it is
    missing, not a regular file (a FIFO would block, ``/dev/zero`` never ends), unreadable or not UTF-8."""
    why = not_regular(path)
    if why:
        raise DataError(f"{path}: {why}")
    try:
        return Path(path).read_text(encoding=encoding)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                        f"{exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
