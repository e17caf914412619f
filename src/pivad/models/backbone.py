"""The backbone interface: what a WSVAD model implements to be π-VAD's teacher and student.

A backbone is an ``nn.Module`` with

- ``name``: its ``model.backbone`` key (``urdmu``, ``pel4vad``, ``rtfm``);
- ``input_dim``: the RGB feature width it reads;
- ``hook_points``: ``{point: width}`` in forward order, where a Poly-modal Inductor reads F* ``[B,T,width]``
  and writes F_M* of the same shape;
- ``placements``: ``inductor.position`` (``early``/``late``/``both``) -> hook points;
- ``forward(x, hooks={point: fn})``: eval mode ``[b,n,T,D] | [B,T,D] -> [b,T]`` scores (crop mean and
  any test-time smoothing included); train mode ``[B,T,D]`` (normal half first) -> its own output
  dataclass, which its training loss (registered in :mod:`pivad.losses.backbone`) reads;
- ``hook_features(x, points)``: the features at ``points`` without hooks, as the current mode computes
  them (the frozen teacher is always in eval mode: its distillation targets).

Models stay free of losses: the engine combines the backbone's loss and the inductor's
(:func:`pivad.losses.inductor.pivad_loss`). docs/backbones.md describes how to add one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from pivad.errors import CheckpointError

Hook = Callable[[torch.Tensor], torch.Tensor]


@runtime_checkable
class Backbone(Protocol):
    name: str
    input_dim: int
    hook_points: dict[str, int]
    placements: dict[str, tuple[str, ...]]

    def __call__(self, x: torch.Tensor, hooks: Mapping[str, Hook] | None = None): ...

    def hook_features(self, x: torch.Tensor, points: Iterable[str]) -> dict[str, torch.Tensor]: ...


def apply_hook(hooks: Mapping[str, Hook] | None, point: str, f: torch.Tensor) -> torch.Tensor:
    """``hooks[point](f)`` when that hook is set, else ``f``."""
    fn = hooks.get(point) if hooks else None
    return f if fn is None else fn(f)


def resolve_points(backbone: Backbone, position: str) -> tuple[str, ...]:
    """Hook points for ``inductor.position``: ``early``/``late``/``both`` via the backbone's placements, a
    hook point's own name, or several joined by ``+`` (e.g. ``context+head``)."""
    if position in backbone.placements:
        return tuple(backbone.placements[position])
    points = tuple(position.split("+"))
    unknown = [p for p in points if p not in backbone.hook_points]
    if unknown or len(set(points)) != len(points):
        known = sorted(backbone.placements) + list(backbone.hook_points)
        raise ValueError(f"inductor.position: {position!r} is not a placement or hook point of "
                         f"{backbone.name} (known: {', '.join(known)})")
    order = list(backbone.hook_points)
    return tuple(sorted(points, key=order.index))


def load_state_dict_checked(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(sd)`` with a one-line :class:`CheckpointError` naming ``source`` for missing or
    unexpected keys and wrong shapes (what official checkpoints of every backbone go through)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        raise CheckpointError(f"{source}: {'; '.join(parts)}")
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: {k} has shape {list(sd[k].shape)}, the model expects {list(v.shape)}")
    model.load_state_dict(dict(sd))


def _short(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def flatten_crops(x: torch.Tensor, name: str) -> tuple[torch.Tensor, int, int]:
    """``[b, n, T, D]`` (crops of a video) or ``[B, T, D]`` (one crop) -> ``([b*n, T, D], b, n)``; another rank
    is a ValueError naming the model ``name``."""
    if x.dim() == 4:
        b, n, T, D = x.shape
        return x.reshape(b * n, T, D), b, n
    if x.dim() == 3:
        return x, x.shape[0], 1
    raise ValueError(f"{name} expects [b,n,T,D] or [B,T,D] features, got shape {list(x.shape)}")
