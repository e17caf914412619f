"""Class-prompt features for PEL4VAD's prompt-enhanced loss (``pel4vad.prompts``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pivad.errors import DataError

BUILTIN = Path(__file__).resolve().parent.parent / "prompts"  # the official repository's files, MIT (ORIGIN.md)


def prompt_path(spec: str) -> Path:
    """``builtin:<ucf|xd|sh>`` or a path to a ``[C, D]`` .npy file."""
    if spec.startswith("builtin:"):
        return BUILTIN / f"{spec.split(':', 1)[1]}-prompt.npy"
    return Path(spec)


def load_prompts(spec: str) -> torch.Tensor | None:
    """``[C, D]`` float32 prompt features (rounded through float16, as the official loader does), or None for ""."""
    if not spec:
        return None
    path = prompt_path(spec)
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"pel4vad.prompts: {path}: cannot read class prompts ({exc})") from None
    if table.ndim != 2 or table.shape[0] < 2:
        raise DataError(f"pel4vad.prompts: {path}: expected a [C>=2, D] array, got shape {list(table.shape)}")
    return torch.from_numpy(table.astype(np.float16).astype(np.float32))
