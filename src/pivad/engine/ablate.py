"""Ablation grids: one training run per (cell, seed), one table with mean ± std over seeds.

Built-in grids (the paper's ablations):

    modalities  Table 6: each modality alone, then pose+depth, +text, +panoptic, all
    position    Table 4: PI early / late / both
    losses      Table 3: PMG only, PMG+align, PMG+distill, align+distill (no PMG), all
    real        Table 5: pseudo modalities (PMG) vs real modality features fed to CMI at inference

or a generic grid from ``--set key=v1,v2`` (cartesian product over several ``--set``).

Layout: ``<out_dir>/ablate/<dataset>/<grid>/<cell>/seed<s>/`` (a normal run directory each) and one
UR-DMU teacher per seed in ``.../<grid>/teacher/seed<s>/`` shared by the cells (it is also the
table's baseline row). A finished cell (``metrics.json`` present) is skipped; an interrupted one
continues from its ``last.pt``. The table goes to ``table.md`` and ``table.csv`` beside the cells.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from pivad.config import Config, from_dict, merge_dict, parse_value, to_dict
from pivad.errors import ConfigError
from pivad.io import atomic_write_text
from pivad.stats import mean_std

KEYS = ("auc", "auc_a", "ap", "ap_a")
TABLE6_ORDER = ("pose", "depth", "text", "panoptic", "flow")


def _modality_cells(cfg: Config) -> list[tuple[str, dict]]:
    mods = {m.name: m for m in cfg.data.modalities}
    if not mods:
        raise ConfigError("ablation 'modalities': data.modalities is empty")
    order = [n for n in TABLE6_ORDER if n in mods] + [n for n in mods if n not in TABLE6_ORDER]

    def cell(names: list[str]) -> tuple[str, dict]:
        return "+".join(names), {"data": {"modalities": [to_dict(mods[n]) for n in names]}}

    cells = [cell([n]) for n in order]
    cells += [cell(order[:k]) for k in range(2, len(order) + 1)]
    return cells


GRIDS: dict[str, Any] = {
    "modalities": _modality_cells,
    "position": lambda cfg: [(p, {"inductor": {"position": p}}) for p in ("early", "late", "both")],
    "losses": lambda cfg: [
        ("pmg", {"loss": {"use_pmg": True, "use_align": False, "use_distill": False}}),
        ("pmg+align", {"loss": {"use_pmg": True, "use_align": True, "use_distill": False}}),
        ("pmg+distill", {"loss": {"use_pmg": True, "use_align": False, "use_distill": True}}),
        ("align+distill", {"loss": {"use_pmg": False, "use_align": True, "use_distill": True}}),
        ("pmg+align+distill", {"loss": {"use_pmg": True, "use_align": True, "use_distill": True}}),
    ],
    "real": lambda cfg: [(s, {"inductor": {"modality_source": s}}) for s in ("pseudo", "real")],
}


def parse_set(spec: str) -> tuple[str, list[Any]]:
    """``"inductor.tau=0.05,0.1"`` -> ``("inductor.tau", [0.05, 0.1])``."""
    if "=" not in spec or "." not in spec.split("=", 1)[0]:
        raise ConfigError(f"--set '{spec}': expected section.key=v1,v2")
    key, values = spec.split("=", 1)
    items = [parse_value(v) for v in values.split(",") if v != ""]
    if not items:
        raise ConfigError(f"--set '{spec}': no values")
    return key, items


def _nested(key: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def set_cells(specs: list[str]) -> list[tuple[str, dict]]:
    """Cartesian product of ``--set`` specs as (cell name, overrides)."""
    parsed = [parse_set(s) for s in specs]
    cells = []
    for combo in itertools.product(*[[(k, v) for v in vals] for k, vals in parsed]):
        name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in combo)
        over: dict = {}
        for k, v in combo:
            over = merge_dict(over, _nested(k, v))
        cells.append((name.replace("/", "_"), over))
    return cells


def grid_cells(cfg: Config, grid: str | None, specs: list[str] | None) -> tuple[str, list[tuple[str, dict]]]:
    if grid and specs:
        raise ConfigError("ablate: give --grid or --set, not both")
    if grid:
        if grid not in GRIDS:
            raise ConfigError(f"ablate --grid: unknown grid {grid!r} (known: {', '.join(GRIDS)})")
        return grid, GRIDS[grid](cfg)
    if specs:
        return "set_" + "_".join(parse_set(s)[0].split(".")[-1] for s in specs), set_cells(specs)
    raise ConfigError("ablate: give --grid NAME or --set section.key=v1,v2")


def _train_and_evaluate(cfg: Config, run_dir: Path, progress: bool) -> dict:
    """Train (or continue) one run and evaluate its selected checkpoint; returns metrics.json's content."""
    from pivad.engine.report import evaluate_checkpoints
    from pivad.engine.runs import run_lock
    from pivad.engine.trainer import train

    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())
    with run_lock(run_dir):  # a second ablation (or a train --resume) of this cell is refused
        result = train(cfg, run_dir, resume=(run_dir / "last.pt").is_file(), progress=progress)
        if result.interrupted:
            raise KeyboardInterrupt
        return evaluate_checkpoints({"best": run_dir / "best.pt"}, run_dir, progress=progress, plots=False,
                                    print_table=False)


def _check_cells(base: dict, cells: list[tuple[str, dict]], seeds: list[int]) -> None:
    """Every cell's and seed's config checked before the first run trains (not hours later, at its turn)."""
    for label, over in [(f"seed {seed}", {"train": {"seed": seed}}) for seed in seeds] + cells:
        try:
            from_dict(merge_dict(base, over))
        except ConfigError as exc:
            raise ConfigError(f"ablation cell {label}: {exc}") from None


def run_ablation(cfg: Config, *, grid: str | None = None, specs: list[str] | None = None,
                 seeds: list[int] = (0,), out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Train every (cell, seed) not yet done, then write and return the table."""
    name, cells = grid_cells(cfg, grid, specs)
    root = Path(out_dir) if out_dir else Path(cfg.train.out_dir) / "ablate" / cfg.data.name / name
    base = to_dict(cfg)
    _check_cells(base, cells, seeds)
    rows: dict[str, list[dict]] = {}
    total = len(seeds) * (len(cells) + 1)
    done = 0
    for seed in seeds:
        teacher_dir = root / "teacher" / f"seed{seed}"
        tcfg = from_dict(merge_dict(base, {"train": {"model": "urdmu", "seed": seed, "teacher_ckpt": ""}}))
        done += 1
        print(f"[{done}/{total}] teacher seed {seed}: {teacher_dir}", file=sys.stderr)
        rows.setdefault("UR-DMU (teacher)", []).append(_train_and_evaluate(tcfg, teacher_dir, progress))
        for cell, over in cells:
            run_dir = root / cell / f"seed{seed}"
            values = merge_dict(base, over)
            values = merge_dict(values, {"train": {"model": "pivad", "seed": seed,
                                                   "teacher_ckpt": str(teacher_dir / "best.pt")}})
            done += 1
            print(f"[{done}/{total}] {cell} seed {seed}: {run_dir}", file=sys.stderr)
            rows.setdefault(cell, []).append(_train_and_evaluate(from_dict(values), run_dir, progress))
    table = summarise(rows, name, cfg.train.selection, list(seeds))
    atomic_write_text(root / "table.md", table["markdown"] + "\n")
    atomic_write_text(root / "table.csv", table["csv"])
    table["dir"] = str(root)
    return table


def summarise(rows: dict[str, list[dict]], grid: str, selection: str, seeds: list[int]) -> dict:
    """Mean ± std (in %) of the selected checkpoint's metrics per cell."""
    label = "test-selected" if selection == "test" else "val-selected"
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    for cell, reports in rows.items():
        picked = [r["models"].get("best") or next(iter(r["models"].values())) for r in reports]
        stats[cell] = {k: mean_std([100 * p[k] if p.get(k) is not None else None for p in picked]) for k in KEYS}
    head = "| cell | " + " | ".join(k.upper() for k in KEYS) + " |"
    lines = [f"ablation '{grid}', {label} checkpoints, mean ± std over seeds {seeds} (%)", "", head,
             "|---" * (len(KEYS) + 1) + "|"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["cell", "selection", "n_seeds"] + [f"{k}_{s}" for k in KEYS for s in ("mean", "std")])
    for cell, st in stats.items():
        lines.append(f"| {cell} | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in (st[k] for k in KEYS)) + " |")
        writer.writerow([cell, label, len(rows[cell])] + [f"{v:.4f}" for k in KEYS for v in st[k]])
    return {"markdown": "\n".join(lines), "csv": buf.getvalue(), "stats": stats}
