"""Activation checkpointing of the transformer blocks (``train.activation_checkpointing``).

A checkpointed block keeps only its inputs for backward and recomputes its activations there
(``torch.utils.checkpoint``, non-reentrant). The random state is saved with the inputs and restored for
the recompute (``preserve_rng_state``), so dropout draws the same masks twice and the results equal the
unchecked ones (tests/test_memory.py). Modules that support it carry a ``checkpoint_blocks`` flag.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_block(fn: Callable[..., torch.Tensor], *args, enabled: bool) -> torch.Tensor:
    """``fn(*args)``, checkpointed when ``enabled`` and autograd is recording (a no-op in eval / no_grad)."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True)
    return fn(*args)


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> int:
    """Switch checkpointing on every module of ``model`` that supports it; returns how many."""
    count = 0
    for module in model.modules():
        if hasattr(module, "checkpoint_blocks"):
            module.checkpoint_blocks = bool(enabled)
            count += 1
    return count
