"""``train.precision`` and ``train.activation_checkpointing``: how a training step spends memory.

- ``precision: bf16`` runs the forward pass under ``torch.autocast(device, torch.bfloat16)`` (CPU and
  CUDA): matrix products in bfloat16, their saved activations half the size. Weights, gradients and
  the optimiser stay float32; the loss terms are computed in float32 (autocast off around them, inputs
  cast up). ``fp32`` (the default) enters no autocast region: results are those of plain float32.
- ``activation_checkpointing: true`` recomputes UR-DMU's and CMI's transformer blocks in backward
  (:mod:`pivad.models.checkpointing`); float32 results equal those without it.
- ``micro_batch: N`` (in :func:`pivad.engine.trainer.backward_step`) runs a step's batch N crops at a
  time with gradients accumulated: the same step, the activations of N crops.

Evaluation and model selection always run in float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch

from pivad.errors import ConfigError
from pivad.models.checkpointing import set_activation_checkpointing

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's precision context: bf16 autocast, or nothing at all for fp32."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def to_float(value: Any) -> Any:
    """Floating tensors in ``value`` (tensors, dicts, dataclasses, None) as float32; float32 ones unchanged."""
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: to_float(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: to_float(getattr(value, f.name)) for f in dataclasses.fields(value)})
    return value


def prepare_model(model: torch.nn.Module, train_cfg) -> torch.nn.Module:
    """Apply ``train.activation_checkpointing`` to a freshly built model (returns it)."""
    set_activation_checkpointing(model, train_cfg.activation_checkpointing)
    return model
