"""Figures a person looks at after a run (matplotlib, Agg backend, written atomically as PNG).

- :func:`plot_score_curves`: per-video frame scores with the ground-truth events shaded (paper Fig. 4, row 2),
  optionally the teacher's curve beside the student's.
- :func:`plot_modality_activations`: per-modality activation curves of the late inductor (Fig. 4, row 3).
- :func:`plot_classwise`: class-wise AUC bars, student against teacher (Fig. 3).
- :func:`plot_training`: loss and selection-score curves from ``log.jsonl``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SNIPPET = 16


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    from pivad.io import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    _plt().close(fig)
    return path


def _grid(n: int, width: float = 4.2, height: float = 2.3):
    plt = _plt()
    cols = min(3, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _shade_events(ax: Any, frame_gt: np.ndarray | None) -> None:
    """Green spans where ``frame_gt`` is 1."""
    if frame_gt is None or not np.any(frame_gt):
        return
    gt = np.asarray(frame_gt).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], gt, [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        ax.axvspan(start, stop, color="tab:green", alpha=0.25, lw=0)


def pick_videos(videos: Sequence[Any], n: int = 6) -> list[int]:
    """Indices of up to ``n`` videos to draw: mostly abnormal ones, one or two normal ones."""
    abnormal = [i for i, v in enumerate(videos) if v.label == 1]
    normal = [i for i, v in enumerate(videos) if v.label == 0]
    n_norm = min(len(normal), max(1, n // 3)) if normal else 0
    picks = abnormal[: n - n_norm] + normal[:n_norm]
    return picks[:n]


def plot_score_curves(videos: Sequence[Any], path: str | Path, *, indices: Sequence[int] | None = None,
                      teacher: Sequence[Any] | None = None, title: str = "", label: str = "π-VAD",
                      threshold: float | None = None) -> Path:
    """Frame scores (red) over ground-truth events (green shading) for chosen videos."""
    indices = list(indices) if indices is not None else pick_videos(videos)
    fig, axes = _grid(len(indices))
    for ax, i in zip(axes, indices):
        v = videos[i]
        frames = np.repeat(v.scores, SNIPPET)
        _shade_events(ax, v.frame_gt)
        x = np.arange(len(frames))
        if teacher is not None:
            ax.plot(x, np.repeat(teacher[i].scores, SNIPPET), color="0.5", lw=1, label="UR-DMU")
        ax.plot(x, frames, color="tab:red", lw=1.2, label=label)
        ax.fill_between(x, 0, frames, color="tab:red", alpha=0.15, lw=0)
        if threshold is not None:
            ax.axhline(threshold, color="k", ls=":", lw=0.8)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, max(1, len(frames) - 1))
        ax.set_title(f"{v.name} ({v.cls})", fontsize=8)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=7, loc="upper left")
        axes[0].set_ylabel("anomaly score", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.supxlabel("frame", fontsize=8)
    return _save(fig, path)


def plot_modality_activations(videos: Sequence[Any], activations: Sequence[dict[str, np.ndarray]],
                              path: str | Path, *, indices: Sequence[int] | None = None, title: str = "") -> Path:
    """Per-modality activation curves (min-max normalised per video) with the events shaded.

    ``activations[i]`` maps modality name -> ``(T,)`` for ``videos[i]``.
    """
    indices = list(indices) if indices is not None else pick_videos(videos)
    fig, axes = _grid(len(indices))
    for ax, i in zip(axes, indices):
        v = videos[i]
        _shade_events(ax, v.frame_gt)
        for name, act in activations[i].items():
            a = np.asarray(act, dtype=np.float64)
            span = a.max() - a.min()
            a = (a - a.min()) / span if span > 0 else np.zeros_like(a)
            ax.plot(np.arange(len(a) * SNIPPET), np.repeat(a, SNIPPET), lw=1, label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{v.name} ({v.cls})", fontsize=8)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=6, loc="upper left", ncol=2)
        axes[0].set_ylabel("normalised activation", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.supxlabel("frame", fontsize=8)
    return _save(fig, path)


def plot_classwise(student: dict[str, float], path: str | Path, *, teacher: dict[str, float] | None = None,
                   student_label: str = "π-VAD", teacher_label: str = "UR-DMU", title: str = "") -> Path:
    """Class-wise AUC bars (in %), student beside teacher."""
    plt = _plt()
    classes = sorted(set(student) | set(teacher or {}))
    x = np.arange(len(classes))
    width = 0.4 if teacher else 0.7
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(classes) + 1.5), 3.2), layout="constrained")
    if teacher:
        ax.bar(x - width / 2, [100 * teacher.get(c, np.nan) for c in classes], width, color="0.6",
               label=teacher_label)
        ax.bar(x + width / 2, [100 * student.get(c, np.nan) for c in classes], width, color="tab:red",
               label=student_label)
        ax.legend(fontsize=8)
    else:
        ax.bar(x, [100 * student.get(c, np.nan) for c in classes], width, color="tab:red")
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("AUC (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_training(records: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Training loss per phase (left) and the selection score (right) against the global step."""
    plt = _plt()
    fig, (ax_loss, ax_sel) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    for phase in dict.fromkeys(r["phase"] for r in records):
        rows = [r for r in records if r["phase"] == phase and isinstance(r.get("loss"), (int, float))]
        if rows:
            ax_loss.plot([r["global_step"] for r in rows], [r["loss"] for r in rows], lw=1, label=phase)
        sel = [r for r in records if r["phase"] == phase and isinstance(r.get("selection_score"), (int, float))]
        if sel:
            ax_sel.plot([r["global_step"] for r in sel], [100 * r["selection_score"] for r in sel], "o-", ms=3,
                        lw=1, label=phase)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    ax_sel.set_xlabel("step")
    ax_sel.set_ylabel("selection score (%)")
    if ax_sel.has_data():
        ax_sel.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
