"""Evaluate a run's checkpoints on the test set: ``metrics.json``, a printed table, per-video scores, plots.

Used by ``pivad evaluate`` and at the end of ``pivad train``. For a π-VAD run the table holds the
teacher (UR-DMU, the baseline), the selected π-VAD (``best.pt``) and the last π-VAD (``last.pt``);
every entry carries its selection label ("val-selected" or "test-selected", design.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pivad.engine.checkpoint import load_model
from pivad.engine.evaluate import (EvalResult, GroundTruth, evaluate_model, format_table, modality_inputs,
                                   save_scores)
from pivad.io import atomic_write_json, json_safe

NAMES = {"urdmu": "UR-DMU", "pel4vad": "PEL4VAD", "rtfm": "RTFM", "pivad": "π-VAD"}  # key "urdmu" below: the teacher, any backbone


def load_test_set(cfg: Any) -> Any:
    """The test split of ``cfg.data``, RGB features only (no training features either). A model that reads
    real modalities gets them per video from the store (:func:`~pivad.engine.evaluate.modality_inputs`),
    so evaluating one that reads none (UR-DMU, π-VAD with pseudo-modalities) needs no modality folder."""
    import dataclasses

    from pivad.data.datasets import build_datasets

    rgb_only = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, modality_root=""))
    return build_datasets(rgb_only, train=False, test=True, progress=False).test


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_checkpoints(run_dir: Path) -> dict[str, Path]:
    """Checkpoints of a run to evaluate, by table key."""
    out = {}
    if (run_dir / "teacher.pt").is_file():
        out["urdmu"] = run_dir / "teacher.pt"
    if (run_dir / "best.pt").is_file():
        out["best"] = run_dir / "best.pt"
    if (run_dir / "last.pt").is_file():
        out["last"] = run_dir / "last.pt"
    return out


def _modality_activations(model: Any, videos: list, indices: list[int], test: Any, device: torch.device,
                          ) -> list[dict[str, np.ndarray]] | None:
    if not hasattr(model, "modality_activations"):
        return None
    acts: list[dict[str, np.ndarray]] = [{} for _ in videos]
    with torch.inference_mode():
        for i in indices:
            item = test[i]
            rgb = item["rgb"] if isinstance(item, dict) else item.rgb
            x = torch.as_tensor(rgb, dtype=torch.float32).unsqueeze(0).to(device)  # (1, C, T, D)
            out = model.modality_activations(x)
            acts[i] = {k: v.reshape(-1).float().cpu().numpy() for k, v in out.items()}
    return acts


def evaluate_checkpoints(checkpoints: dict[str, Path], out_dir: Path, *, overrides: Any = None,
                         progress: bool = True, plots: bool = True, print_table: bool = True) -> dict:
    """Evaluate each checkpoint on the test set of its config (``overrides``: a Config replacing the
    checkpoint's data/eval sections); writes ``metrics.json``, ``scores/*.npz`` and ``plots/*.png``."""
    out_dir = Path(out_dir)
    results: dict[str, EvalResult] = {}
    entries: dict[str, dict] = {}
    models: dict[str, Any] = {}
    test = gt = cfg0 = None
    for key, path in checkpoints.items():
        model, cfg, meta = load_model(path, overrides)
        if overrides is not None:
            cfg.data, cfg.eval = overrides.data, overrides.eval
        if cfg0 is None:
            cfg0 = cfg
            test = load_test_set(cfg)
            gt = GroundTruth.from_config(cfg)
        device = _device(cfg.train.device)
        model = model.to(device).eval()
        infer = model.student_only().eval() if meta["kind"] == "pivad" else model
        mods = modality_inputs(cfg) if meta["kind"] == "pivad" else None
        result = evaluate_model(infer, test, gt, device=device, batch_crops=cfg.eval.batch_crops,
                                ap_form=cfg.eval.ap_form, progress=progress, desc=f"test {key}",
                                modality_kwargs=mods, model_name=str(path))
        label = "test-selected" if cfg.train.selection == "test" else "val-selected"
        if key == "last":
            label = "last"
        entries[key] = {"checkpoint": str(path), "kind": meta["kind"], "label": label,
                        "phase": meta.get("phase"), "step": meta.get("step"), **result.metrics}
        results[key] = result
        models[key] = (model, device, meta["kind"])
    for key, result in results.items():  # written once every checkpoint has scored: a bad one replaces nothing
        save_scores(out_dir / "scores" / f"{key}.npz", result.videos)

    selection = cfg0.train.selection if cfg0 is not None else "val"
    report = {
        "dataset": cfg0.data.name if cfg0 else "",
        "selection": selection,
        "selection_label": "test-selected" if selection == "test" else "val-selected",
        "note": ("test-selected: the checkpoint was chosen by its test-set score (the field's practice); "
                 "these numbers are optimistic maxima" if selection == "test" else
                 "val-selected: the checkpoint was chosen on held-out training videos (video-level AUC)"),
        "ap_form": cfg0.eval.ap_form if cfg0 else "",
        "models": entries,
        "plots": {},
    }
    if plots and results:
        report["plots"] = _make_plots(results, entries, models, test, out_dir / "plots", cfg0)
    atomic_write_json(out_dir / "metrics.json", json_safe(report))  # undefined metrics (NaN) -> null
    if print_table:
        print(render_table(report), file=sys.stdout)
    return report


def row_name(key: str, entry: dict) -> str:
    name = NAMES.get(entry["kind"], entry["kind"])
    return f"{name} ({'teacher, ' if key == 'urdmu' and entry['kind'] != 'pivad' else ''}{entry['label']})"


def render_table(report: dict) -> str:
    rows = {row_name(k, e): e for k, e in report["models"].items()}
    lines = [f"dataset: {report['dataset']}   model selection: {report['selection_label']}", "",
             format_table(rows, keys=("auc", "auc_a", "ap", "ap_a", "video_auc"))]
    if report.get("plots"):
        lines += ["", "plots:"] + [f"  {p}" for p in report["plots"].values()]
    return "\n".join(lines)


def _make_plots(results: dict[str, EvalResult], entries: dict, models: dict, test: Any, plot_dir: Path,
                cfg: Any) -> dict[str, str]:
    from pivad import plots as P

    out: dict[str, str] = {}
    main_key = "best" if "best" in results else next(iter(results))
    main = results[main_key]
    label = entries[main_key]["label"]
    name = NAMES.get(entries[main_key]["kind"], "model")
    teacher = results.get("urdmu") if main_key != "urdmu" else None
    idx = P.pick_videos(main.videos)
    out["scores"] = str(P.plot_score_curves(
        main.videos, plot_dir / "scores.png", indices=idx, teacher=teacher.videos if teacher else None,
        label=name, threshold=cfg.eval.threshold,
        title=f"{name} frame scores ({label}); green: ground-truth events"))
    model, device, kind = models[main_key]
    if kind == "pivad" and cfg.inductor.modality_source != "real":
        acts = _modality_activations(model, main.videos, idx, test, device)
        if acts is not None:
            out["modalities"] = str(P.plot_modality_activations(
                main.videos, acts, plot_dir / "modalities.png", indices=idx,
                title="late-PI modality activations (first CMI block), normalised per video"))
    cw = entries[main_key].get("classwise") or {}
    if cw:
        tcw = entries["urdmu"].get("classwise") if teacher is not None else None
        out["classwise"] = str(P.plot_classwise(cw, plot_dir / "classwise.png", teacher=tcw, student_label=name,
                                                title=f"class-wise AUC ({label})"))
    run_dir = plot_dir.parent
    from pivad.engine.logging import read_log

    records = read_log(run_dir / "log.jsonl")
    if records:
        out["training"] = str(P.plot_training(records, plot_dir / "training.png",
                                              title=f"training (model selection: {cfg.train.selection})"))
    return out


def evaluate_run(run_dir: Path, *, overrides: Any = None, progress: bool = True, plots: bool = True,
                 print_table: bool = True) -> dict:
    """Evaluate a run directory's checkpoints into the run directory itself."""
    return evaluate_checkpoints(run_checkpoints(run_dir), run_dir, overrides=overrides, progress=progress,
                                plots=plots, print_table=print_table)
