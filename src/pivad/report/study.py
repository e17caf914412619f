"""The study page ``OUT/NAME.html`` of ``pivad study``: its table and a forest plot of every paired Δ.

Built from the summary alone (:func:`pivad.engine.study.build_summary`). One forest plot per metric
(frame AUC of the val-selected and of the last checkpoint, AUC_A, AP, AP_A, video AUC): a row per
variant (square: the mean Δ over all its pairs; line: the 95 % Student-t interval) and, when the study
has more than one data seed, a row per data seed under it (circle). The plots are inline SVG drawn
here, so the page needs no script at all; the summary rides along as ``#pivad-data`` for other tools.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from pivad.engine.study_summary import format_delta, heading
from pivad.io import atomic_write_text
from pivad.report.page import asset, script_json

# (metric, Δ field, title) of each forest plot
PLOTS = (("auc", "delta", "Δ frame AUC (selected checkpoint)"),
         ("auc", "delta_last", "Δ frame AUC (last checkpoint)"), ("auc_a", "delta", "Δ AUC_A"),
         ("ap", "delta", "Δ AP"), ("ap_a", "delta", "Δ AP_A"), ("video_auc", "delta", "Δ video AUC"))
PLOT_W, VALUE_W, ROW_H, AXIS_H = 440, 290, 22, 30
CHAR_W, MAX_LABEL_W = 8.6, 340  # a bold 12.5 px character, generously; the widest label column
BETTER, WORSE, UNSURE = "#2ca02c", "#d62728", "#5f6b76"
STYLE = """svg.forest { display: block; max-width: 100%; height: auto; font: 12.5px system-ui, sans-serif; }
svg.forest .axis line { stroke: var(--line); } svg.forest .axis text { fill: var(--muted); }
svg.forest .zero { stroke: var(--fg); stroke-dasharray: 4 3; }
svg.forest .forest-row.seed text.label { fill: var(--muted); }
svg.forest .forest-row.variant text.label { font-weight: 600; }
svg.forest text.value { font-variant-numeric: tabular-nums; }
table#summary td { white-space: nowrap; } table#summary th { white-space: normal; }
table#summary { font-size: 13px; } table#summary th, table#summary td { padding: 3px 5px; }"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k)."""
    span = max(hi - lo, 1e-9)
    raw = span / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def forest_rows(summary: dict, metric: str, field: str) -> list[dict]:
    """The plot's rows: each variant's Δ, then its Δ per data seed (when there are several)."""
    rows = []
    for name, entry in summary["by_variant"].items():
        d = entry["metrics"][metric][field]
        rows.append({"kind": "variant", "variant": name, "seed": None, "label": name, **d})
        per_seed = entry.get("by_data_seed") or {}
        if len(per_seed) > 1:
            for ds, by_metric in per_seed.items():
                rows.append({"kind": "seed", "variant": name, "seed": ds, "label": f"data seed {ds}",
                             **by_metric[metric][field]})
    return rows


def forest_svg(rows: list[dict], title: str) -> str:
    """One forest plot as an ``<svg>`` element (values in points; the dashed line is Δ = 0).

    The axis spans 0, every mean and the variants' intervals; a data seed's interval (a few pairs, so
    often far wider) is cut at the axis' ends, where an arrowhead says it goes on."""
    values = [0.0] + [v for r in rows for v in ((r["mean"], r["t_low"], r["t_high"]) if r["kind"] == "variant"
                                                  else (r["mean"],)) if _finite(v)]
    lo, hi = min(values), max(values)
    pad = 0.04 * max(hi - lo, 1.0)
    ticks = nice_ticks(lo - pad, hi + pad)
    d0, d1 = ticks[0], ticks[-1]
    x0 = round(min(max(120.0, 24 + CHAR_W * max(len(str(r["label"])) for r in rows)), MAX_LABEL_W))
    fits = int((x0 - 24) // CHAR_W)  # longer names are cut with "…" (the row's tooltip has them whole)
    width = x0 + PLOT_W + VALUE_W

    def x(v: float) -> float:
        return round(x0 + (min(max(v, d0), d1) - d0) / (d1 - d0) * PLOT_W, 2)

    height = AXIS_H + ROW_H * len(rows) + 8
    top, bottom = 6, AXIS_H + ROW_H * len(rows)
    parts = [f'<svg class="forest" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{_e(title)}" data-domain="{d0} {d1}" '
             f'data-range="{x0} {x0 + PLOT_W}">', '<g class="axis">']
    for t in ticks:
        parts.append(f'<line x1="{x(t)}" x2="{x(t)}" y1="{top + 14}" y2="{bottom}"/>'
                     f'<text x="{x(t)}" y="{top + 8}" text-anchor="middle">{t:+g}</text>')
    parts.append(f'<text x="{x0 + PLOT_W + 36}" y="{top + 8}">Δ [95 % t interval] · wins/n</text></g>')
    parts.append(f'<line class="zero" x1="{x(0)}" x2="{x(0)}" y1="{top + 14}" y2="{bottom}"/>')
    for i, r in enumerate(rows):
        y = AXIS_H + ROW_H * i + ROW_H / 2
        has_ci = r["n"] >= 2 and _finite(r["t_low"], r["t_high"])
        colour = (BETTER if has_ci and r["t_low"] > 0 else WORSE if has_ci and r["t_high"] < 0 else UNSURE)
        attrs = (f'class="forest-row {r["kind"]}" data-variant="{_e(r["variant"])}" '
                 f'data-seed="{"" if r["seed"] is None else _e(r["seed"])}" data-n="{r["n"]}" '
                 f'data-mean="{r["mean"] if _finite(r["mean"]) else ""}" '
                 f'data-low="{r["t_low"] if has_ci else ""}" data-high="{r["t_high"] if has_ci else ""}"')
        indent = 18 if r["kind"] == "seed" else 6
        text = format_delta(r) + (f" · {r['wins']}/{r['n']}" if r["n"] else "")
        label = str(r["label"]) if len(str(r["label"])) <= fits else str(r["label"])[:fits - 1] + "…"
        parts.append(f"<g {attrs}><title>{_e(r['variant'])}"
                     f"{'' if r['seed'] is None else ', data seed ' + _e(r['seed'])}: {_e(text)}</title>"
                     f'<text class="label" x="{indent}" y="{y + 4}">{_e(label)}</text>')
        if has_ci:
            stroke = 2.5 if r["kind"] == "variant" else 1.5
            parts.append(f'<line class="ci" x1="{x(r["t_low"])}" x2="{x(r["t_high"])}" y1="{y}" y2="{y}" '
                         f'stroke="{colour}" stroke-width="{stroke}"/>')
            for end, sign in ((r["t_low"], -1), (r["t_high"], 1)):
                e = x(end)
                if d0 <= end <= d1:
                    parts.append(f'<line class="cap" x1="{e}" x2="{e}" y1="{y - 4}" y2="{y + 4}" stroke="{colour}"/>')
                else:  # cut at the axis' end: an arrowhead pointing on
                    parts.append(f'<path class="cut" d="M{e + 6 * sign} {y} L{e} {y - 4} L{e} {y + 4} Z" '
                                 f'fill="{colour}"/>')
        if r["n"] and _finite(r["mean"]):
            if r["kind"] == "variant":
                parts.append(f'<rect class="point" x="{x(r["mean"]) - 5}" y="{y - 5}" width="10" height="10" '
                             f'fill="{colour}"/>')
            else:
                parts.append(f'<circle class="point" cx="{x(r["mean"])}" cy="{y}" r="4" fill="{colour}"/>')
        parts.append(f'<text class="value" x="{x0 + PLOT_W + 36}" y="{y + 4}">{_e(text)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _table(summary: dict) -> str:
    seeds = bool(summary.get("data_seeds", True))
    head = ["variant", "n", "teacher AUC", "π-VAD AUC", "Δ AUC", "Δ AUC (last)", "wins", "Δ AUC_A", "Δ video AUC"]
    head += ["Δ AUC per data seed"] if seeds else []
    out = ['<table id="summary" class="data"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for name, e in summary["by_variant"].items():
        m = e["metrics"]

        def ms(v: list) -> str:
            return f"{v[0]:.2f} ± {v[1]:.2f}" if _finite(v[0]) else "—"

        cells = [name, e["n"], ms(m["auc"]["teacher"]), ms(m["auc"]["pivad"]), format_delta(m["auc"]["delta"]),
                 format_delta(m["auc"]["delta_last"]), f"{m['auc']['delta']['wins']}/{e['n']}",
                 format_delta(m["auc_a"]["delta"]), format_delta(m["video_auc"]["delta"])]
        if seeds:
            cells.append(" / ".join(f"{d['mean']:+.1f}" if d["n"] else "—"
                                    for d in e["delta_auc_by_data_seed"].values()))
        out.append(f'<tr data-variant="{_e(name)}">' + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _runs_table(summary: dict) -> str:
    head = ["variant", "data seed", "training seed", "teacher AUC", "π-VAD AUC", "Δ AUC", "π-VAD AUC (last)"]
    out = ['<table id="runs" class="data"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
           + "</tr></thead><tbody>"]

    def pts(v: Any) -> str:
        return f"{100 * v:.2f}" if _finite(v) else "—"

    for r in summary.get("rows", []):
        t, p, pl = r["teacher"].get("auc"), r["pivad"].get("auc"), r["pivad_last"].get("auc")
        delta = f"{100 * (p - t):+.2f}" if _finite(p, t) else "—"
        cells = [r["variant"], "—" if r.get("data_seed") is None else r["data_seed"], r["train_seed"], pts(t),
                 pts(p), delta, pts(pl)]
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_study_page(summary: dict, title: str = "study") -> str:
    """The page's HTML text (self-contained: inline style, inline SVG, no script)."""
    n_pairs = sum(e["n"] for e in summary["by_variant"].values())
    seeds = summary.get("data_seeds") or []
    sub = (f"pivad study · {len(summary['by_variant'])} variant(s) · {n_pairs} paired runs"
           + (f" · data seeds {', '.join(map(str, seeds))}" if seeds else "")
           + f" · training seeds {', '.join(map(str, summary.get('train_seeds') or []))}")
    plots = "".join(f'<section class="forest-plot" data-metric="{m}" data-field="{f}"><h3>{_e(t)}</h3>'
                    f"{forest_svg(forest_rows(summary, m, f), t)}</section>" for m, f, t in PLOTS)
    variants = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v or '(config as is)')}</code></td></tr>"
                       for k, v in summary["variants"].items())
    overrides = " ".join(summary.get("overrides") or [])
    every_run = f" · every run: {_e(overrides)}" if overrides else ""
    body = f"""<header><h1>Seeded study: {_e(title)}</h1><p>{_e(heading(summary))}</p><p>{_e(sub)}</p></header>
<main>
<section><h2>Teacher against each variant (points)</h2><div style="overflow-x:auto">{_table(summary)}</div>
<p class="note">Δ = π-VAD − teacher on the same pair (data seed, training seed), mean over the pairs and its 95 %
Student-t interval; the JSON beside this page also holds a bootstrap interval. wins: pairs where π-VAD is
higher.</p>
</section>
<section><h2>Forest plots</h2>
<p class="hint">square: a variant over all its pairs; circle: one data seed; line: 95 % t interval (none for a
single pair); green: the interval lies above 0, red: below 0, grey: it crosses 0; dashed: Δ = 0</p>
{plots}</section>
<section><h2>Variants</h2><table id="variants" class="data facts"><tbody>{variants}</tbody></table>
<p class="note">config {_e(summary.get('config', ''))}{every_run}</p></section>
<section><h2>Pairs</h2><div class="browser"><div class="list">{_runs_table(summary)}</div></div></section>
</main>"""
    data = {k: v for k, v in summary.items() if k != "files"}
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"
            f"<title>{_e(title)} · pivad study</title>\n<style>\n{asset('report.css')}\n{STYLE}\n</style>\n</head>\n"
            f"<body>\n{body}\n<script type=\"application/json\" id=\"pivad-data\">{script_json(data)}</script>\n"
            "</body>\n</html>\n")


def write_study_html(path: str | Path, summary: dict, title: str = "study") -> Path:
    """Write the page atomically; returns its path."""
    path = Path(path)
    atomic_write_text(path, render_study_page(summary, title))
    return path
