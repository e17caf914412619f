"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A write that fails because the disk is full, over quota or read-only leaves no temporary file behind
and becomes a :class:`~pivad.errors.DiskError` naming the target (``<file>: no space left on device``).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pivad.errors import DiskError


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
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: str | Path, array: Any) -> None:
    """``np.save`` through a temporary file (the target keeps its exact name)."""
    import numpy as np

    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)  # through a Python file: a full disk is an OSError (ENOSPC), not an opaque RuntimeError
