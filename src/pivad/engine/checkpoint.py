"""Checkpoints: one file holds everything needed to rebuild, resume or deploy a model.

Payload (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    version    checkpoint format version (int) and pivad version (str)
    kind       "urdmu" | "pel4vad" | "rtfm" (a backbone alone) | "pivad"
    config     the resolved Config as a nested dict
    model      state_dict
    optimizer  optimiser state_dict (None in exported/inference files)
    phase      "teacher" | "first" | "second" (the phase the step counter belongs to)
    step       steps done in that phase; global_step counts over all phases
    metrics    selection / evaluation metrics known when it was written
    threshold  anomaly threshold on frame scores (used by ``pivad detect``)
    rng        RNG states (python, numpy, torch, cuda) per rank, for exact resume
    loader     the balanced loader's state_dict, for exact resume
    best       {"score", "step", "phase"} of the best checkpoint so far
    log_window the per-step losses since the last log line, so a resumed run logs as an uninterrupted one

Official UR-DMU, PEL4VAD and RTFM state dicts (a bare ``{name: tensor}`` mapping with the official key names;
``model.backbone`` of the given config says which) load too, through :func:`load_model` /
:func:`load_inference_model`.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pivad import __version__
from pivad.errors import CheckpointError, ConfigError, PivadError
from pivad.io import atomic_torch_save
from pivad.safe_load import first_line, load_weights

FORMAT_VERSION = 1
REQUIRED_KEYS = ("version", "kind", "config", "model")


def _plain(obj: Any) -> Any:
    """Make ``obj`` loadable with ``weights_only=True``: numpy arrays -> tensors, numpy scalars -> python."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [_plain(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    return obj


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` atomically (temporary file + rename); adds the format version."""
    missing = [k for k in ("kind", "config", "model") if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    payload = dict(payload)
    payload["version"] = {"format": FORMAT_VERSION, "pivad": __version__}
    if "features" not in payload:  # what it was trained on, so that detect can say when that is not video
        from pivad.engine.provenance import training_features

        payload["features"] = training_features(payload["config"])
    atomic_torch_save(path, _plain(payload))


def _torch_load(path: Path) -> Any:
    return load_weights(path, "checkpoint")


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _shown(value: Any, limit: int = 40) -> str:
    """A short ``repr`` of a stored value, for one-line messages."""
    text = repr(value) if not isinstance(value, torch.Tensor) else f"a tensor of shape {list(value.shape)}"
    return _shown_text(text, limit)


def _shown_text(text: str, limit: int) -> str:
    """``text`` on one line (whitespace runs -> one space), cut at ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_weights(sd: Any, path: str | Path, entry: str = "model") -> None:
    """``sd`` must be a ``{name: dense tensor}`` mapping with finite floating values (whether the names and
    shapes fit the model is checked when it is built); :class:`CheckpointError` naming the file, the entry
    and the first bad weight otherwise."""
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: '{entry}' holds {type(sd).__name__} {_shown(sd)}, not a state dict "
                              "(weight name -> tensor)")
    for name, value in sd.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            what = f"a {value.layout} tensor" if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{path}: '{entry}' entry {_shown(name)} holds {what}, not a dense tensor")
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{path}: weight {name} holds {bad} NaN/Inf value(s) of {value.numel()}; "
                                  "a model with them scores nothing")


def check_threshold(value: Any, where: str, name: str = "threshold") -> float | None:
    """A stored anomaly threshold: None (absent) or a finite number in [0, 1], where scores lie;
    :class:`CheckpointError` naming ``where`` (the file) and ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{where}: {name} {_shown(value)} is not a number")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise CheckpointError(f"{where}: {name} {value!r} is not a finite number in [0, 1] (scores lie there)")
    return float(value)


# entry -> (accepted types, what they are called); None is accepted for each (absent or not recorded)
_OPTIONAL = {"step": ((int,), "a step count"), "global_step": ((int,), "a step count"), "phase": ((str,), "a name"),
             "metrics": ((dict,), "a mapping"), "features": ((dict,), "a mapping")}


def _check_entries(obj: dict, path: Path) -> None:
    """The entries inference reads: kind, config, model weights, threshold and the descriptive ones."""
    from pivad.config import BACKBONES

    kinds = (*BACKBONES, "pivad")
    if obj["kind"] not in kinds:
        raise CheckpointError(f"{path}: unknown model kind {_shown(obj['kind'])} (expected one of {', '.join(kinds)})")
    if not isinstance(obj["config"], dict):
        raise CheckpointError(f"{path}: 'config' holds {type(obj['config']).__name__}, not a mapping")
    check_weights(obj["model"], path)
    check_threshold(obj.get("threshold"), str(path))
    for key, (types, what) in _OPTIONAL.items():
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            raise CheckpointError(f"{path}: '{key}' holds {type(value).__name__} {_shown(value)}, not {what}")


def load_checkpoint(path: str | Path) -> dict:
    """Read one of our checkpoints; :class:`CheckpointError` naming the file if it is not one, or if an
    entry inference reads is malformed (weights that are not a state dict or hold NaN/Inf, a threshold
    that is not a finite number in [0, 1], ...)."""
    path = Path(path)
    return _checked(_torch_load(path), path)


def _checked(obj: Any, path: Path) -> dict:
    """``obj`` (a loaded file) as one of our checkpoints, checked as :func:`load_checkpoint` says."""
    if not isinstance(obj, dict) or any(k not in obj for k in REQUIRED_KEYS):
        kind = "a bare state dict (official UR-DMU?)" if is_state_dict(obj) else type(obj).__name__
        raise CheckpointError(f"{path}: not a pivad checkpoint (found {kind})")
    fmt = obj["version"].get("format") if isinstance(obj["version"], dict) else None
    if fmt != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {_shown(fmt)}, this pivad reads {FORMAT_VERSION}")
    _check_entries(obj, path)
    return obj


# ----------------------------------------------------------------------------------------- RNG states


def rng_state() -> dict:
    """All RNG states of this process (python, numpy, torch CPU, CUDA if in use), as plain python values
    (lists of ints) so that they travel through ``all_gather_object`` and ``weights_only`` loads."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ------------------------------------------------------------------------------------- model loading


def _strip_teacher(sd: dict, model: torch.nn.Module) -> dict:
    """Drop ``teacher.*`` keys the target model does not have (inference builds omit the teacher)."""
    own = model.state_dict().keys()
    return {k: v for k, v in sd.items() if k in own or not k.startswith("teacher.")}


def _fit_problem(exc: RuntimeError) -> str:
    """The first concrete mismatch of a ``load_state_dict`` error (torch lists them one per line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = next((ln for ln in lines[1:] if "size mismatch" in ln or "Missing" in ln or "Unexpected" in ln), None)
    return first_line(RuntimeError(detail or (lines[0] if lines else type(exc).__name__)), 200)


def checkpoint_config(ckpt: dict, path: str | Path = "<memory>") -> Any:
    """The Config stored in a loaded checkpoint, checked as a config file is (a bad value is a
    :class:`CheckpointError` naming the file and the key, before anything is built from it)."""
    from pivad.config import from_dict

    try:
        return from_dict(ckpt["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {_shown_text(str(exc), 200)}") from None  # one line, however the value prints


def model_from_checkpoint(ckpt: dict, path: str | Path = "<memory>") -> tuple[torch.nn.Module, Any]:
    """Rebuild the model stored in a loaded checkpoint dict; returns (model, Config)."""
    from pivad.models.factory import KINDS, build_model

    cfg = checkpoint_config(ckpt, path)
    kind = ckpt["kind"]
    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown model kind {_shown(kind)}")
    try:
        model = build_model(kind, cfg)
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError, PivadError) as exc:  # widths that do not fit
        raise CheckpointError(f"{path}: its config builds no {kind} model ({first_line(exc, 160)})") from None
    sd = _strip_teacher(ckpt["model"], model)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the {kind} model of its config "
                              f"({_fit_problem(exc)})") from None
    return model, cfg


def _features_of_older(ckpt: dict) -> dict | None:
    """Checkpoints from before the ``features`` record: inferred from their config when its data is on disk."""
    from pivad.engine.provenance import training_features

    data = ckpt["config"].get("data", {}) if isinstance(ckpt.get("config"), dict) else {}
    return training_features(ckpt["config"]) if data.get("root") and Path(data["root"]).is_dir() else None


def load_model(path: str | Path, cfg: Any = None) -> tuple[torch.nn.Module, Any, dict]:
    """Full model (π-VAD with its inductors, or UR-DMU) in eval mode, its Config, and meta.

    ``cfg`` is used only for official UR-DMU state dicts (their model widths; defaults otherwise).
    """
    from pivad.config import Config

    path = Path(path)
    obj = _torch_load(path)
    if is_state_dict(obj):  # official weights of model.backbone (UR-DMU, PEL4VAD or RTFM)
        check_weights(obj, path, "state dict")
        cfg = cfg if cfg is not None else Config()
        kind = cfg.model.backbone
        try:
            if kind == "pel4vad":
                from pivad.data.prompts import load_prompts
                from pivad.models.pel4vad import PEL4VAD

                model = PEL4VAD.from_official_state_dict(obj, cfg.model, cfg.pel4vad,
                                                         load_prompts(cfg.pel4vad.prompts), source=str(path))
            elif kind == "rtfm":  # the config's widths (rtfm section, model.input_dim); shapes are checked
                from pivad.models.rtfm import RTFMBackbone

                widths = RTFMBackbone.from_config(cfg.rtfm, cfg.model.input_dim).cfg
                model = RTFMBackbone.from_official_state_dict(obj, widths, source=str(path))
            else:
                from pivad.models import URDMU

                model = URDMU.from_official_state_dict(obj, cfg.model)
        except (KeyError, RuntimeError, ValueError) as exc:
            name = {"pel4vad": "PEL4VAD", "rtfm": "RTFM"}.get(kind, "UR-DMU")
            raise CheckpointError(f"{path}: not an official {name} state dict ({first_line(exc, 200)})") from None
        meta = {"kind": kind, "source": "official", "step": None, "phase": None, "metrics": {},
                "threshold": cfg.eval.threshold}
        return model.eval(), cfg, meta
    ckpt = _checked(obj, path)
    model, cfg = model_from_checkpoint(ckpt, path)
    meta = {
        "kind": ckpt["kind"],
        "source": "pivad",
        "step": ckpt.get("step"),
        "phase": ckpt.get("phase"),
        "global_step": ckpt.get("global_step"),
        "metrics": ckpt.get("metrics") or {},
        "threshold": ckpt.get("threshold"),
        "version": ckpt["version"],
        "features": ckpt.get("features") or _features_of_older(ckpt),
    }
    if meta["threshold"] is None:  # absent: its config's, which detect would otherwise use unchecked
        meta["threshold"] = check_threshold(cfg.eval.threshold, str(path), "config eval.threshold")
    return model.eval(), cfg, meta


def load_inference_model(path: str | Path, cfg: Any = None) -> tuple[torch.nn.Module, Any, dict]:
    """RGB-only inference model in eval mode (``model(x [b,n,T,D] | [B,T,D]) -> [b,T]``), Config, meta.

    Accepts our UR-DMU and π-VAD checkpoints (π-VAD as its ``student_only()`` view: no teacher)
    and official UR-DMU state dicts.
    """
    model, cfg, meta = load_model(path, cfg)
    if meta["kind"] == "pivad":
        model = model.student_only().eval()
    return model, cfg, meta
