"""A seeded study's summary: per-variant means, paired Δ = π-VAD − teacher with intervals, the table.

Pure functions of the study's rows (one per finished (variant, data seed, training seed) pair, as
:mod:`pivad.engine.study` collects them, or as an earlier ``NAME.json`` stored them), so that a summary
written by an older study is re-rendered from its rows alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from pivad.stats import mean_std, paired_difference

METRICS = ("auc", "auc_a", "ap", "ap_a", "video_auc")


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def _delta(rows: list[dict], model: str, metric: str) -> dict:
    """The paired Δ (points) of ``model`` (``pivad`` or ``pivad_last``) against the teacher."""
    variant = [_pct(r[model][metric]) for r in rows]
    teacher = [_pct(r["teacher"][metric]) for r in rows]
    return asdict(paired_difference([math.nan if v is None else v for v in variant],
                                    [math.nan if v is None else v for v in teacher]))


def summarise(rows: list[dict], variants: list[str], data_seeds: list[int]) -> dict:
    """Per variant and metric: teacher and π-VAD mean ± std (points), the paired Δ of the val-selected and
    the last checkpoint; per data seed, the same Δ of every metric (``by_data_seed``) and of AUC alone
    (``delta_auc_by_data_seed``, the table's last column)."""
    out: dict[str, Any] = {"by_variant": {}}
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        entry: dict[str, Any] = {"n": len(mine), "metrics": {}}
        for m in METRICS:
            entry["metrics"][m] = {"teacher": mean_std([_pct(r["teacher"][m]) for r in mine]),
                                   "pivad": mean_std([_pct(r["pivad"][m]) for r in mine]),
                                   "pivad_last": mean_std([_pct(r["pivad_last"][m]) for r in mine]),
                                   "delta": _delta(mine, "pivad", m), "delta_last": _delta(mine, "pivad_last", m)}
        per_seed = {ds: [r for r in mine if r["data_seed"] == ds] for ds in data_seeds}
        entry["delta_auc_by_data_seed"] = {ds: _delta(sub, "pivad", "auc") for ds, sub in per_seed.items()}
        entry["by_data_seed"] = {ds: {m: {"delta": _delta(sub, "pivad", m), "delta_last": _delta(sub, "pivad_last", m)}
                                      for m in METRICS} for ds, sub in per_seed.items()}  # fmt: skip
        out["by_variant"][name] = entry
    return out


def _ms(v: tuple[float, float]) -> str:
    m, s = v
    return "—" if m is None or (isinstance(m, float) and math.isnan(m)) else f"{m:.2f} ± {s:.2f}"


def format_delta(d: dict) -> str:
    """``+1.23 [-0.45, +2.91]`` (mean [95 % t interval]); the mean alone for one pair, ``—`` for none."""
    if d["n"] == 0:
        return "—"
    if d["n"] < 2:
        return f"{d['mean']:+.2f}"
    return f"{d['mean']:+.2f} [{d['t_low']:+.2f}, {d['t_high']:+.2f}]"


def heading(summary: dict) -> str:
    """The table's first line: what was studied and how to read it."""
    what = f"preset {summary['preset']}" if summary.get("preset") else f"data {summary.get('dataset', '?')}"
    if summary.get("family", 1) != 1:
        what += f" (synthetic family {summary['family']})"
    label = "test-selected" if summary.get("selection") == "test" else "val-selected"
    config = " ".join([summary["config"], *(summary.get("overrides") or [])])  # + the study-wide overrides
    return (f"seeded study, {what}, config {config}; {label} checkpoints; "
            "Δ = π-VAD − teacher, paired, mean [95 % t interval], in points")


def render_markdown(summary: dict) -> str:
    """The study table (one row per variant) and the variants' overrides, as markdown."""
    by_seed = bool(summary.get("data_seeds", True))  # real features: no data seeds, no last column
    head = "| variant | n | teacher AUC | π-VAD AUC | Δ AUC | Δ AUC (last) | wins | Δ AUC_A | Δ video AUC |"
    lines = [heading(summary), "", head + (" Δ AUC per data seed |" if by_seed else ""),
             "|---" * (10 if by_seed else 9) + "|"]
    for name, e in summary["by_variant"].items():
        m = e["metrics"]
        row = (f"| {name} | {e['n']} | {_ms(m['auc']['teacher'])} | {_ms(m['auc']['pivad'])} | "
               f"{format_delta(m['auc']['delta'])} | {format_delta(m['auc']['delta_last'])} | "
               f"{m['auc']['delta']['wins']}/{e['n']} | {format_delta(m['auc_a']['delta'])} | "
               f"{format_delta(m['video_auc']['delta'])} |")
        if by_seed:
            row += " " + " / ".join(f"{d['mean']:+.1f}" if d["n"] else "—"
                                    for d in e["delta_auc_by_data_seed"].values()) + " |"
        lines.append(row)
    lines += ["", "variants: " + "; ".join(f"{k}: `{v or '(config as is)'}`" for k, v in summary["variants"].items())]
    return "\n".join(lines)
