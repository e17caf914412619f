"""The late PI's per-modality activation curves of one video for the detection page (paper Fig. 4, row 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def normalise(a: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] per curve (as ``pivad.plots.plot_modality_activations``); flat curves become 0."""
    a = np.asarray(a, dtype=np.float64)
    span = a.max() - a.min() if a.size else 0.0
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def modality_activations(checkpoint: str | Path, features: np.ndarray) -> dict[str, list[float]]:
    """``{modality: [T] in [0, 1]}`` for a π-VAD checkpoint with pseudo modalities (RGB only); ``{}`` for
    UR-DMU, official state dicts and models that need real modality features."""
    import torch

    from pivad.engine.checkpoint import load_model

    model, cfg, meta = load_model(checkpoint)
    if meta.get("kind") != "pivad" or cfg.inductor.modality_source == "real":
        return {}
    with torch.inference_mode():
        acts = model.modality_activations(torch.from_numpy(np.ascontiguousarray(features))[None])  # name -> (1, T)
    return {name: [round(float(x), 5) for x in normalise(a.reshape(-1).float().numpy())] for name, a in acts.items()}
