"""Evaluation: score every test video in one pass, then the field's metrics.

Each video is scored whole (never resampled): its crops go through the model together as
``[1, C, T, D]`` (at most ``eval.batch_crops`` crops at a time, combined with the right weights) under
``torch.inference_mode``; the model averages the crops' snippet scores. Frame scores repeat each
snippet score 16 times (:func:`pivad.metrics.snippets_to_frames`), frame ground truth comes from the
annotation file (or a precomputed ``data.gt`` vector, sliced by the videos' lengths).

Model selection during training (:func:`selection_score`):
- ``val`` (default, honest): held-out *training* videos, which carry only video labels. A video's
  score is the mean of its top-k snippet scores (k = T//16 + 1, UR-DMU's k); the selection score is
  the ROC-AUC of these video scores against the video labels.
- ``test`` (the field's practice): the headline test metric (``eval.metric``) itself; every number
  obtained this way is labelled "test-selected".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from pivad.errors import CheckpointError, DataError

SNIPPET = 16


@dataclass
class VideoResult:
    name: str
    label: int
    cls: str
    scores: np.ndarray  # (T,) snippet scores, crop mean
    frame_gt: np.ndarray | None = None  # (16T,) uint8


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    videos: list[VideoResult] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ scoring


def _entry(item: Any) -> tuple[str, int, str, Any]:
    """(name, label, cls, rgb [C,T,D]) of a test-set entry (attribute or dict access)."""
    get = (lambda k: item[k]) if isinstance(item, dict) else (lambda k: getattr(item, k))
    return str(get("name")), int(get("label")), str(get("cls")), get("rgb")


def iter_videos(dataset: Any) -> Iterable[Any]:
    for i in range(len(dataset)):
        yield dataset[i]


@torch.inference_mode()
def score_video(model: Callable, rgb: Any, device: torch.device | str = "cpu", batch_crops: int = 10,
                **kwargs: Any) -> np.ndarray:
    """Snippet scores ``(T,)`` of one video ``rgb [C,T,D]`` (or ``[T,D]``), crop mean, one pass per chunk."""
    x = torch.as_tensor(rgb, dtype=torch.float32)
    if x.dim() == 2:
        x = x.unsqueeze(0)  # (1, T, D)
    n_crops = x.shape[0]
    step = max(1, int(batch_crops))
    kwargs = {k: ({n: t.to(device) for n, t in v.items()} if isinstance(v, dict) else v) for k, v in kwargs.items()}
    total = None
    for start in range(0, n_crops, step):
        chunk = x[start:start + step].unsqueeze(0).to(device)  # (1, c, T, D)
        s = model(chunk, **kwargs).reshape(-1).float()  # (T,) mean over the chunk's crops
        s = s * chunk.shape[1]
        total = s if total is None else total + s
    return (total / n_crops).cpu().numpy()


def score_dataset(model: Callable, dataset: Any, device: torch.device | str = "cpu", batch_crops: int = 10,
                  progress: bool = False, desc: str = "eval", modality_kwargs: Callable | None = None,
                  model_name: str = "the model") -> list[VideoResult]:
    """Score every video of a test-like dataset (entries with name/label/cls/rgb).

    NaN or Inf in any video's scores is a :class:`CheckpointError` naming ``model_name`` (its file) and
    the video: such scores are never a result (their metrics would be undefined or wrong)."""
    out = []
    items = iter_videos(dataset)
    for item in tqdm(items, total=len(dataset), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        name, label, cls, rgb = _entry(item)
        kwargs = modality_kwargs(item) if modality_kwargs else {}
        scores = score_video(model, rgb, device, batch_crops, **kwargs)  # (T,)
        bad = ~np.isfinite(scores)
        if bad.any():
            raise CheckpointError(f"{model_name}: the model returned NaN/Inf scores for video {name} "
                                  f"({int(bad.sum())} of {len(scores)} snippets)")
        out.append(VideoResult(name, label, cls, scores))
    return out


# ------------------------------------------------------------------------------------- ground truth


class GroundTruth:
    """Frame ground truth per video: from the annotation file, or slices of a precomputed vector."""

    def __init__(self, annotation: str = "", fmt: str = "ucf", gt_path: str = "") -> None:
        self.annotations = None
        self.flat = None
        self.gt_path = gt_path
        if gt_path:
            from pivad.data.ground_truth import read_gt_vector

            self.flat = read_gt_vector(gt_path)
            self._offset = 0
        elif annotation:
            from pivad.data.annotations import parse_annotations

            self.annotations = parse_annotations(annotation, fmt=fmt)
        else:
            raise DataError("no ground truth: set data.annotation (or data.gt) to evaluate")

    @classmethod
    def from_config(cls, cfg: Any) -> "GroundTruth":
        return cls(cfg.data.annotation, cfg.data.annotation_format, cfg.data.gt)

    def attach(self, videos: list[VideoResult]) -> None:
        """Set ``frame_gt`` of each video (in list order)."""
        if self.flat is not None:
            need = sum(SNIPPET * len(v.scores) for v in videos)
            if need != len(self.flat):
                raise DataError(
                    f"{self.gt_path}: {len(self.flat)} frames, the test features need {need} (16·ΣT)")
            offset = 0
            for v in videos:
                n = SNIPPET * len(v.scores)
                v.frame_gt = np.asarray(self.flat[offset:offset + n], dtype=np.uint8)
                offset += n
            return
        from pivad.data.ground_truth import video_frame_gt

        for v in videos:
            v.frame_gt = np.asarray(video_frame_gt(v.name, len(v.scores), self.annotations), dtype=np.uint8)


# ------------------------------------------------------------------------------------------ metrics


def compute_metrics(videos: list[VideoResult], ap_form: str = "trapezoid") -> dict[str, Any]:
    """auc, auc_a, ap, ap_a, video_auc, classwise of scored videos with ground truth attached."""
    from pivad.metrics import VideoScores, evaluate_scores, snippets_to_frames

    vs = [VideoScores(v.name, v.label, v.cls, snippets_to_frames(v.scores), v.frame_gt) for v in videos]
    metrics = evaluate_scores(vs, ap_form=ap_form)
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in metrics.items()}


def evaluate_model(model: Callable, dataset: Any, gt: GroundTruth, *, device: torch.device | str = "cpu",
                   batch_crops: int = 10, ap_form: str = "trapezoid", progress: bool = False,
                   desc: str = "test", modality_kwargs: Callable | None = None,
                   model_name: str = "the model") -> EvalResult:
    """Score the test set and compute every metric (``model_name`` names the model in errors)."""
    videos = score_dataset(model, dataset, device, batch_crops, progress, desc, modality_kwargs, model_name)
    gt.attach(videos)
    return EvalResult(compute_metrics(videos, ap_form), videos)


def modality_inputs(cfg: Any) -> Callable | None:
    """For ``inductor.modality_source: real`` models (studies): a function giving a test entry's real
    modality features as ``{"modalities": {name: [1,T,d]}}``; None for RGB-only models."""
    if cfg.inductor.modality_source != "real":
        return None
    from pivad.data.modality_store import ModalityStore

    store = None

    def kwargs(item: Any) -> dict:
        nonlocal store
        name, _, _, rgb = _entry(item)
        feats = getattr(item, "modalities", None)
        if not feats:  # the test set was loaded without them: read the store
            if store is None:
                store = ModalityStore(cfg.data.modality_root, cfg.data.modalities, cfg.data.t_align)
            feats = store.load(name, int(np.shape(rgb)[-2]))
        return {"modalities": {k: torch.as_tensor(v, dtype=torch.float32)[None] for k, v in feats.items()}}  # (1, T, d)

    return kwargs


def topk_video_score(scores: np.ndarray) -> float:
    """Video-level score: mean of the top-k snippet scores, k = T//16 + 1 (UR-DMU's k)."""
    k = len(scores) // SNIPPET + 1
    return float(np.sort(scores)[-k:].mean())


def video_level_auc(videos: list[VideoResult]) -> float | None:
    """ROC-AUC of top-k video scores against video labels (None if only one class is present)."""
    from sklearn.metrics import roc_auc_score

    labels = [v.label for v in videos]
    if len(set(labels)) < 2:
        return None
    return float(roc_auc_score(labels, [topk_video_score(v.scores) for v in videos]))


def selection_score(model: Callable, *, selection: str, val: Any = None, test: Any = None,
                    gt: GroundTruth | None = None, metric: str = "auc", ap_form: str = "trapezoid",
                    device: torch.device | str = "cpu", batch_crops: int = 10,
                    modality_kwargs: Callable | None = None) -> tuple[float | None, dict]:
    """The number model selection maximises, and the metrics it came from."""
    if selection == "val":
        if val is None or len(val) == 0:
            return None, {}
        videos = score_dataset(model, val, device, batch_crops, modality_kwargs=modality_kwargs)
        auc = video_level_auc(videos)
        return auc, ({"val_video_auc": auc} if auc is not None else {})
    if selection == "test":
        result = evaluate_model(model, test, gt, device=device, batch_crops=batch_crops, ap_form=ap_form,
                                modality_kwargs=modality_kwargs)
        m = result.metrics
        return m[metric], {f"test_{k}": m[k] for k in ("auc", "auc_a", "ap", "ap_a") if k in m}
    raise ValueError(f"unknown selection {selection!r}")


def save_scores(path: str | Path, videos: list[VideoResult]) -> None:
    """Per-video snippet scores as one ``.npz`` (key ``scores/<name>``; ``__labels__`` / ``__names__`` too),
    and each video's frame ground truth (``gt/<name>``, uint8 [16T]) when attached (the HTML report reads it)."""
    from pivad.io import atomic_path

    arrays = {f"scores/{v.name}": v.scores.astype(np.float32) for v in videos}
    arrays.update({f"gt/{v.name}": np.asarray(v.frame_gt, dtype=np.uint8) for v in videos if v.frame_gt is not None})
    arrays["__names__"] = np.array([v.name for v in videos])
    arrays["__labels__"] = np.array([v.label for v in videos], dtype=np.int8)
    arrays["__classes__"] = np.array([v.cls for v in videos])
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def format_table(rows: dict[str, dict], keys: tuple[str, ...] = ("auc", "auc_a", "ap", "ap_a"),
                 title: str = "model") -> str:
    """Markdown table of metrics (in %) for named rows."""
    head = f"| {title} | " + " | ".join(k.upper() for k in keys) + " |"
    sep = "|---" * (len(keys) + 1) + "|"
    lines = [head, sep]
    for name, m in rows.items():
        cells = [f"{100 * m[k]:.2f}" if isinstance(m.get(k), (int, float)) else "-" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
