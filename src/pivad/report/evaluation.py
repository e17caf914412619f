"""The evaluation page ``<run>/report.html`` of ``pivad evaluate --html``, built from what evaluate wrote.

Inputs, all from the evaluation's own outputs (nothing is re-scored): ``metrics.json`` (the headline and
class-wise numbers, shown as they are), ``scores/<model>.npz`` (per-video snippet scores and frame ground
truth) and the run's ``log.jsonl`` (training curves). Computed here for display: per-video frame AUC and
false-alarm mass, and the ROC and PR curves of all test frames, resampled on a fixed grid for drawing.
Each video's curves are drawn at most ``max_points`` points long (bucket maxima,
:func:`pivad.report.downsample.peak_downsample`); the metrics never see those.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from pivad.errors import DataError
from pivad.report.downsample import on_grid, peak_downsample
from pivad.report.page import write_page

SNIPPET = 16
MAX_POINTS = 1000  # per drawn video curve
GRID = np.linspace(0.0, 1.0, 201)  # FPR (ROC) and recall (PR) at which curves are drawn
METRIC_KEYS = ("auc", "auc_a", "ap", "ap_a", "video_auc")
COLOURS = {"urdmu": "#7f7f7f", "best": "#d62728", "last": "#ff7f0e", "model": "#d62728"}


def read_scores(path: str | Path) -> dict[str, Any]:
    """``{names, labels, classes, scores: {name: [T]}, gt: {name: [16T] | None}}`` of a ``scores/*.npz``."""
    try:
        with np.load(path) as z:
            names = [str(n) for n in z["__names__"]]
            return {"names": names, "labels": [int(x) for x in z["__labels__"]],
                    "classes": [str(c) for c in z["__classes__"]],
                    "scores": {n: np.asarray(z[f"scores/{n}"], dtype=np.float64) for n in names},
                    "gt": {n: (np.asarray(z[f"gt/{n}"]) if f"gt/{n}" in z.files else None) for n in names}}  # fmt: skip
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a pivad scores file ({exc})") from None


def frame_scores(scores: np.ndarray, n_frames: int) -> np.ndarray:
    """Snippet scores repeated over their 16 frames, cut to ``n_frames`` (the evaluation's frame rule)."""
    return np.repeat(scores, SNIPPET)[:n_frames]


def video_stats(scores: np.ndarray, gt: np.ndarray | None) -> tuple[float | None, float | None]:
    """(frame AUC within the video, or None when its ground truth has one class; false-alarm mass:
    the sum of the frame scores on its normal frames / 16, i.e. in snippets)."""
    if gt is None:
        return None, None
    from sklearn.metrics import roc_auc_score

    s = frame_scores(scores, len(gt))
    positives = int(gt.sum())
    auc = float(roc_auc_score(gt, s)) if 0 < positives < len(gt) else None
    return auc, float(s[gt == 0].sum() / SNIPPET)


def gt_spans(gt: np.ndarray | None) -> list[list[int]]:
    """Ground-truth events as ``[start, stop)`` frame ranges."""
    if gt is None or not np.any(gt):
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(gt, dtype=np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def frame_curves(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ROC (TPR at each FPR of :data:`GRID`) and PR (precision at each recall) over all test frames."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    out: dict[str, Any] = {"grid": [round(float(g), 4) for g in GRID], "tpr": {}, "precision": {}}
    for key, run in runs.items():
        if any(run["gt"][n] is None for n in run["names"]):
            continue
        gt = np.concatenate([run["gt"][n] for n in run["names"]])
        s = np.concatenate([frame_scores(run["scores"][n], len(run["gt"][n])) for n in run["names"]])
        if gt.min() == gt.max():
            continue
        fpr, tpr, _ = roc_curve(gt, s)
        precision, recall, _ = precision_recall_curve(gt, s)
        out["tpr"][key] = [round(float(v), 4) for v in on_grid(fpr, tpr, GRID)]
        out["precision"][key] = [round(float(v), 4) for v in on_grid(recall, precision, GRID)]
    return out


def video_rows(runs: dict[str, dict[str, Any]], max_points: int = MAX_POINTS) -> list[dict[str, Any]]:
    """One entry per test video: name, class, label, T, per-model AUC and false-alarm mass, drawn curves."""
    first = next(iter(runs.values()))
    rows = []
    for i, name in enumerate(first["names"]):
        gt = first["gt"][name]
        row: dict[str, Any] = {"name": name, "cls": first["classes"][i], "label": first["labels"][i],
                               "T": int(len(first["scores"][name])), "auc": {}, "fa": {}, "curves": {},
                               "gt": gt_spans(gt)}  # fmt: skip
        starts = None
        for key, run in runs.items():
            scores = run["scores"].get(name)
            if scores is None:
                raise DataError(f"scores/{key}.npz: no scores for test video {name}")
            row["auc"][key], row["fa"][key] = video_stats(scores, run["gt"].get(name))
            starts, peaks = peak_downsample(scores, max_points)
            row["curves"][key] = [round(float(v), 4) for v in peaks]
        row["x"] = [int(s) * SNIPPET for s in starts]
        row["n_frames"] = int(len(gt)) if gt is not None else row["T"] * SNIPPET
        rows.append(row)
    return rows


def training_curves(records: list[dict]) -> dict[str, Any] | None:
    """Loss and selection score per phase against the global step, aligned on one step axis (None: no log)."""
    rows = [r for r in records if isinstance(r.get("global_step"), (int, float))]
    if not rows:
        return None
    phases = list(dict.fromkeys(str(r.get("phase")) for r in rows))

    def aligned(field: str) -> dict[str, Any]:
        have = [r for r in rows if isinstance(r.get(field), (int, float))]
        steps = sorted({int(r["global_step"]) for r in have})
        index = {s: i for i, s in enumerate(steps)}
        series = {p: [None] * len(steps) for p in phases}
        for r in have:
            series[str(r.get("phase"))][index[int(r["global_step"])]] = float(r[field])
        return {"steps": steps, "series": {p: v for p, v in series.items() if any(x is not None for x in v)}}

    return {"loss": aligned("loss"), "selection": aligned("selection_score")}


def report_data(out_dir: str | Path, log_path: str | Path | None = None, max_points: int = MAX_POINTS) -> dict:
    """What ``evaluate.js`` reads, from ``out_dir/metrics.json``, ``out_dir/scores/*.npz`` and the log."""
    from pivad.engine.logging import read_log
    from pivad.engine.report import row_name

    out_dir = Path(out_dir)
    metrics_path = out_dir / "metrics.json"
    try:
        report = json.loads(metrics_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{metrics_path}: cannot read the evaluation results ({exc})") from None
    runs = {key: read_scores(out_dir / "scores" / f"{key}.npz") for key in report["models"]}
    models = []
    for key, entry in report["models"].items():
        models.append({"key": key, "name": row_name(key, entry), "colour": COLOURS.get(key, "#1f77b4"),
                       "checkpoint": entry.get("checkpoint"), "n_videos": entry.get("n_videos"),
                       "classwise": entry.get("classwise") or {}, **{k: entry.get(k) for k in METRIC_KEYS}})
    records = read_log(log_path) if log_path else []
    return {
        "dataset": report.get("dataset", ""), "selection_label": report.get("selection_label", ""),
        "note": report.get("note", ""), "ap_form": report.get("ap_form", ""), "models": models,
        "main": "best" if "best" in runs else next(iter(runs)),
        "curves": frame_curves(runs), "videos": video_rows(runs, max_points), "max_points": max_points,
        "training": training_curves(records),
    }


BODY = """<header><h1>{title}</h1><p>{subtitle}</p></header>
<main>
<section><h2>Results (frame level unless marked)</h2><table id="headline" class="data"></table>
<p class="note" id="note"></p></section>
<section><h2>Class-wise AUC (%)</h2><div style="overflow-x:auto"><table id="classwise" class="data"></table></div></section>
<div class="cols">
<section><h2>ROC (all test frames)</h2><div id="roc" class="plot"></div></section>
<section><h2>Precision–recall (all test frames)</h2><div id="pr" class="plot"></div></section>
</div>
<section><h2>Test videos</h2>
<p class="hint">click a column to sort (again to reverse), a row to see that video's scores against its ground truth
(green); per-video AUC is the frame AUC within the video (– when it has one class only); false-alarm mass is the
sum of the scores on its normal frames, in snippets</p>
<div class="browser"><div class="list"><table id="videos" class="data"><thead></thead><tbody></tbody></table></div>
<div class="view"><h3 id="video-title"></h3><p class="note" id="video-facts"></p><div id="video-chart" class="plot"></div>
</div></div></section>
<section id="training-section"><h2>Training</h2><div class="cols"><div><h3>loss</h3><div id="train-loss" class="plot"></div></div>
<div><h3>selection score</h3><div id="train-selection" class="plot"></div></div></div></section>
</main>"""


def write_evaluation_html(out_dir: str | Path, log_path: str | Path | None = None,
                          max_points: int = MAX_POINTS) -> Path:
    """Write ``out_dir/report.html``; returns its path."""
    data = report_data(out_dir, log_path, max_points)
    title = f"Evaluation: {data['dataset'] or Path(out_dir).name}"
    subtitle = f"pivad evaluate · {len(data['videos'])} test videos · model selection: {data['selection_label']}"
    body = BODY.format(title=html.escape(title), subtitle=html.escape(subtitle))
    return write_page(Path(out_dir) / "report.html", title, body, data, ("evaluate.js",))
