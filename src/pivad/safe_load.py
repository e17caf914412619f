"""Reading PyTorch files without running code from them, with one-line errors that name the file.

Every ``.pt``/``.pth`` pivad reads goes through :func:`load_weights` (``torch.load(weights_only=True)``:
tensors and plain containers only, on the zip and the legacy pickle paths alike) or, for files that
carry pickled training objects (ViFi-CLIP), through an allow-list unpickler that turns every other
global into an inert placeholder. What goes wrong is reported as one line: truncated file, not a
PyTorch file, or a file holding Python objects that were refused because loading them could run code.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

from pivad.errors import CheckpointError
from pivad.io import not_regular

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type when it has none), cut at ``limit`` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def _describe(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` failed on ``path``, in a few words (no advice to turn safety off)."""
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        return "empty file"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        return "truncated or corrupt (an incomplete zip archive)"
    found = _GLOBAL.search(str(exc))
    if found or re.search(r"Unsupported class|Unsupported global|Trying to load unsupported", str(exc)):
        what = f" ({found.group(1)})" if found else ""
        return f"holds Python objects{what} besides tensors; refused, since loading them could run code"
    if isinstance(exc, EOFError) or "EOF" in str(exc) or "truncated" in str(exc).lower():
        return "truncated (the file ends early)"
    if zipfile.is_zipfile(path):
        return f"a zip archive that is not a readable PyTorch file ({first_line(exc, 100)})"
    return "not a PyTorch file (neither a torch.save zip archive nor a legacy torch pickle)"


def check_file(path: str | Path, what: str = "checkpoint") -> Path:
    """``path`` if it is a regular file; :class:`CheckpointError` saying what it is otherwise (missing, a
    folder, a device or FIFO)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {not_regular(path) or f'no such {what} file'}")
    return path


def load_weights(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; :class:`CheckpointError` naming the file otherwise."""
    import torch

    path = check_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the user gets one line
        raise CheckpointError(f"{path}: not a readable {what}: {_describe(path, exc)}") from None
