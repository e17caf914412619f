"""What features a model was trained on, recorded in its checkpoint, and what ``detect`` compares it with.

A model trained on the synthetic demo features scores real video as confidently as nonsense (0.99
everywhere on a real clip), so checkpoints carry ``features``: the source (``synthetic`` when the
training data was written by :mod:`pivad.data.synth`, ``i3d`` otherwise), the crops per video and the
feature width. :func:`feature_warnings` turns a mismatch with the features ``detect`` computes into
one-line warnings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def training_features(config: dict[str, Any]) -> dict[str, Any]:
    """The ``features`` record of a checkpoint from its (plain dict) config."""
    data = config.get("data", {}) if isinstance(config, dict) else {}
    source = "i3d"
    meta_path = Path(str(data.get("root") or "")) / "meta.json"
    if data.get("root"):
        try:
            meta = json.loads(meta_path.read_text())
            if isinstance(meta, dict) and meta.get("generator") == "pivad.data.synth":
                source = f"synthetic (pivad data synth, generator version {meta.get('version')})"
        except (OSError, ValueError):
            pass
    return {"source": source, "num_crops": data.get("num_crops"), "feature_dim": data.get("feature_dim")}


def feature_warnings(record: dict[str, Any] | None, *, crops: int, where: str) -> list[str]:
    """One line per way the features ``detect`` computes (real-video I3D, ``crops`` crops) differ from
    those the model at ``where`` was trained on; no record (an older or official checkpoint): none."""
    if not isinstance(record, dict):
        return []
    out = []
    source = str(record.get("source") or "")
    if source.startswith("synthetic"):
        out.append(f"{where}: this model was trained on {source} features, not on I3D features of real "
                   "video; its scores here mean nothing")
    trained = record.get("num_crops")
    if isinstance(trained, int) and trained > 0 and trained != crops:
        out.append(f"{where}: this model was trained on {trained}-crop features, detect computes {crops} "
                   f"(--crops {trained} to match)")
    return out
