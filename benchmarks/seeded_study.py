"""Seeded study: the UR-DMU teacher against π-VAD variants over training seeds × data seeds.

    python benchmarks/seeded_study.py --out /tmp/study --data-seeds 0,1,2 --train-seeds 1,2,3,4,5 \
        --variant base --variant late:inductor.position=late --lanes 2

Every (data seed, training seed) pair trains one UR-DMU teacher (shared by every variant whose
teacher-relevant settings match) and one π-VAD per variant distilled from it, on the synthetic
dataset of that data seed (``--preset``, ``configs/demo.yaml`` unless ``-c``). Each run is evaluated
on the test split (frame AUC, AUC_A, AP, AP_A, video AUC) for the val-selected and the last
checkpoint. Runs go two at a time (``--lanes``), one thread each, in worker processes; each run's
``result.json`` is written as it finishes, so an interrupted study continues where it stopped (a run
killed midway resumes from its ``last.pt``). The summary — per-run rows, mean ± std, and the paired
Δ = π-VAD − teacher with its 95 % Student-t and bootstrap intervals, per variant and per data seed —
goes to ``OUT/study.json`` and ``OUT/study.md`` (``--name`` renames them).

A variant is ``NAME`` or ``NAME:section.key=value,section.key=value`` (overrides on top of the config).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = ("auc", "auc_a", "ap", "ap_a", "video_auc")
# settings that change the teacher: a variant that leaves all of them alone shares the teacher runs
TEACHER_KEYS = {"model": None, "data": ("num_segments", "batch_normal", "batch_abnormal", "val_fraction"),
                "train": ("teacher_steps", "lr", "weight_decay", "eval_every", "selection")}


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """``"late:inductor.position=late,loss.lambda_distill=0.5"`` -> ("late", ["--inductor.position", "late", ...])."""
    name, _, rest = spec.partition(":")
    overrides: list[str] = []
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise SystemExit(f"seeded_study: --variant {spec!r}: expected NAME:section.key=value,...")
        overrides += [f"--{key}", value]
    return name, overrides


def build_config(config: str | None, overrides: list[str], data_dir: Path, seed: int, model: str, extra: dict):
    from pivad.commands.demo import demo_config
    from pivad.config import from_dict, merge_dict, to_dict

    cfg = demo_config(config, overrides, data_dir, data_dir)
    values = merge_dict(to_dict(cfg), {"train": {"seed": seed, "model": model, "threads": 1, **extra}})
    return from_dict(values)


def teacher_key(cfg) -> str:
    from pivad.config import to_dict

    values = to_dict(cfg)
    picked = {sec: ({k: values[sec][k] for k in keys} if keys else values[sec]) for sec, keys in TEACHER_KEYS.items()}
    return hashlib.sha1(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:10]


def _metrics(entry: dict) -> dict:
    out = {k: entry.get(k) for k in METRICS}
    out.update(step=entry.get("step"), phase=entry.get("phase"))
    return out


def run_job(cfg_values: dict, run_dir: str, checkpoints: tuple[str, ...]) -> dict:
    """Train (or continue) one run and evaluate it; writes and returns ``result.json``'s content."""
    import torch

    torch.set_num_threads(1)
    from pivad.config import from_dict
    from pivad.engine.report import evaluate_checkpoints
    from pivad.engine.trainer import train
    from pivad.io import atomic_write_json

    run = Path(run_dir)
    t0 = time.time()
    cfg = from_dict(cfg_values)
    result = train(cfg, run, resume=(run / "last.pt").is_file(), progress=False)
    if result.interrupted:
        raise KeyboardInterrupt
    report = evaluate_checkpoints({k: run / f"{k}.pt" for k in checkpoints}, run, progress=False, plots=False,
                                  print_table=False)
    out = {k: _metrics(report["models"][k]) for k in checkpoints}
    out["seconds"] = time.time() - t0
    atomic_write_json(run / "result.json", out)
    if "last" not in checkpoints:  # teachers: only best.pt is read later
        (run / "last.pt").unlink(missing_ok=True)
    return out


def _init_worker() -> None:
    """One thread; and leave when the study process is gone (a killed study must not leave runs behind)."""
    import threading

    os.environ["OMP_NUM_THREADS"] = "1"
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)  # the run resumes from its last.pt when the study is started again

    threading.Thread(target=watch, daemon=True).start()


class Study:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.variants = [parse_variant(v) for v in args.variant] or [("base", [])]
        self.data_seeds = [int(s) for s in args.data_seeds.split(",")]
        self.train_seeds = [int(s) for s in args.train_seeds.split(",")]

    def data_dir(self, ds: int) -> Path:
        return self.out / "data" / f"seed{ds}"

    def plan(self) -> tuple[dict, list]:
        """Teacher jobs {dir: cfg} and π-VAD jobs [(variant, ds, ts, dir, cfg, teacher dir)]."""
        from pivad.config import to_dict

        teachers: dict[str, dict] = {}
        students = []
        for ds in self.data_seeds:  # data seed outermost: every variant's first data seed comes first
            for name, overrides in self.variants:
                for ts in self.train_seeds:
                    tcfg = build_config(self.args.config, overrides, self.data_dir(ds), ts, "urdmu", {})
                    tdir = self.out / "teachers" / teacher_key(tcfg) / f"d{ds}_s{ts}"
                    teachers[str(tdir)] = to_dict(tcfg)
                    scfg = build_config(self.args.config, overrides, self.data_dir(ds), ts, "pivad",
                                        {"teacher_ckpt": str(tdir / "best.pt")})
                    sdir = self.out / "runs" / name / f"d{ds}_s{ts}"
                    students.append((name, ds, ts, str(sdir), to_dict(scfg), str(tdir)))
        return teachers, students

    def run(self) -> None:
        from pivad.data.synth import write_synthetic_dataset

        for ds in self.data_seeds:
            write_synthetic_dataset(self.data_dir(ds), seed=ds, preset=self.args.preset, family=self.args.family)
        teachers, students = self.plan()
        done = {d for d in list(teachers) + [s[3] for s in students] if (Path(d) / "result.json").is_file()}
        todo_t = [d for d in teachers if d not in done]
        todo_s = [s for s in students if s[3] not in done]
        total, finished, t0 = len(todo_t) + len(todo_s), 0, time.time()
        print(f"seeded study: {len(teachers)} teacher and {len(students)} π-VAD runs, {len(done)} already done, "
              f"{total} to run in {self.args.lanes} lanes", file=sys.stderr)
        ctx = get_context("spawn")
        with ProcessPoolExecutor(self.args.lanes, mp_context=ctx, initializer=_init_worker) as pool:
            running: dict = {}

            def submit_ready() -> None:
                while len(running) < self.args.lanes and (todo_t or todo_s):
                    ready = next((s for s in todo_s if s[5] in done), None)
                    if ready is not None:
                        todo_s.remove(ready)
                        fut = pool.submit(run_job, ready[4], ready[3], ("best", "last"))
                        running[fut] = f"{ready[0]} d{ready[1]} s{ready[2]}", ready[3]
                    elif todo_t:
                        tdir = todo_t.pop(0)
                        fut = pool.submit(run_job, teachers[tdir], tdir, ("best",))
                        running[fut] = f"teacher {Path(tdir).parent.name}/{Path(tdir).name}", tdir
                    else:
                        break

            submit_ready()
            while running:
                finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished_now:
                    label, run_dir = running.pop(fut)
                    res = fut.result()
                    done.add(run_dir)
                    finished += 1
                    auc = res["best"]["auc"]
                    print(f"[{finished}/{total}] {label}: AUC {100 * auc:.2f} ({res['seconds']:.0f} s; "
                          f"{(time.time() - t0) / 60:.1f} min elapsed)", file=sys.stderr, flush=True)
                submit_ready()
        self.report()

    def report(self) -> dict:
        from pivad.io import atomic_write_json, atomic_write_text

        teachers, students = self.plan()
        rows = []
        for name, ds, ts, sdir, _, tdir in students:
            sres, tres = Path(sdir) / "result.json", Path(tdir) / "result.json"
            if not (sres.is_file() and tres.is_file()):
                continue
            s, t = json.loads(sres.read_text()), json.loads(tres.read_text())
            rows.append({"variant": name, "data_seed": ds, "train_seed": ts, "teacher": t["best"],
                         "pivad": s["best"], "pivad_last": s["last"], "seconds": s["seconds"]})
        summary = summarise(rows, [v for v, _ in self.variants], self.data_seeds)
        summary["variants"] = {name: " ".join(o) for name, o in self.variants}
        summary["preset"], summary["config"] = self.args.preset, self.args.config or "configs/demo.yaml"
        summary["family"] = self.args.family
        summary["rows"] = rows
        atomic_write_json(self.out / f"{self.args.name}.json", summary)
        md = render(summary)
        atomic_write_text(self.out / f"{self.args.name}.md", md + "\n")
        print(md)
        return summary


def summarise(rows: list[dict], variants: list[str], data_seeds: list[int]) -> dict:
    """Per variant and metric: teacher and π-VAD mean ± std, paired Δ with intervals; Δ AUC per data seed."""
    from dataclasses import asdict

    from pivad.stats import mean_std, paired_difference

    def pct(v):
        return None if v is None else 100 * v

    out: dict = {"by_variant": {}}
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        entry: dict = {"n": len(mine), "metrics": {}}
        for m in METRICS:
            t = [pct(r["teacher"][m]) for r in mine]
            p = [pct(r["pivad"][m]) for r in mine]
            pl = [pct(r["pivad_last"][m]) for r in mine]
            entry["metrics"][m] = {"teacher": mean_std(t), "pivad": mean_std(p), "pivad_last": mean_std(pl),
                                   "delta": asdict(paired_difference(p, t)),
                                   "delta_last": asdict(paired_difference(pl, t))}
        entry["delta_auc_by_data_seed"] = {
            ds: asdict(paired_difference([pct(r["pivad"]["auc"]) for r in mine if r["data_seed"] == ds],
                                         [pct(r["teacher"]["auc"]) for r in mine if r["data_seed"] == ds]))
            for ds in data_seeds}
        out["by_variant"][name] = entry
    return out


def _ms(v) -> str:
    m, s = v
    return "—" if m is None or (isinstance(m, float) and math.isnan(m)) else f"{m:.2f} ± {s:.2f}"


def _delta(d: dict) -> str:
    if d["n"] == 0:
        return "—"
    if d["n"] < 2:
        return f"{d['mean']:+.2f}"
    return f"{d['mean']:+.2f} [{d['t_low']:+.2f}, {d['t_high']:+.2f}]"


def render(summary: dict) -> str:
    family = f" (synthetic family {summary['family']})" if summary.get("family", 1) != 1 else ""
    lines = [f"seeded study, preset {summary['preset']}{family}, config {summary['config']}; val-selected checkpoints; "
             "Δ = π-VAD − teacher, paired, mean [95 % t interval], in points", "",
             "| variant | n | teacher AUC | π-VAD AUC | Δ AUC | Δ AUC (last) | wins | Δ AUC_A | Δ video AUC |"
             " Δ AUC per data seed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in summary["by_variant"].items():
        m = e["metrics"]
        per_ds = " / ".join(f"{d['mean']:+.1f}" if d["n"] else "—" for d in e["delta_auc_by_data_seed"].values())
        lines.append(f"| {name} | {e['n']} | {_ms(m['auc']['teacher'])} | {_ms(m['auc']['pivad'])} | "
                     f"{_delta(m['auc']['delta'])} | {_delta(m['auc']['delta_last'])} | "
                     f"{m['auc']['delta']['wins']}/{e['n']} | {_delta(m['auc_a']['delta'])} | "
                     f"{_delta(m['video_auc']['delta'])} | {per_ds} |")
    lines += ["", "variants: " + "; ".join(f"{k}: `{v or '(config as is)'}`" for k, v in summary["variants"].items())]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="study folder (data, teachers, runs, study.json, study.md)")
    p.add_argument("-c", "--config", default=str(REPO / "configs" / "demo.yaml"), help="base config")
    p.add_argument("--preset", default="demo", help="synthetic dataset preset")
    p.add_argument("--family", type=int, default=1, choices=(1, 2),
                   help="synthetic generator family (2: docs/synthetic.md, 'Family 2'; use its own --out)")
    p.add_argument("--data-seeds", default="0,1,2")
    p.add_argument("--train-seeds", default="1,2,3,4,5")
    p.add_argument("--variant", action="append", default=[], help="NAME[:section.key=value,...] (repeatable)")
    p.add_argument("--lanes", type=int, default=2, help="runs in parallel, one thread each")
    p.add_argument("--report-only", action="store_true", help="summarise the finished runs, train nothing")
    p.add_argument("--name", default="study", help="summary files: OUT/NAME.json and OUT/NAME.md")
    args = p.parse_args()
    study = Study(args)
    if args.report_only:
        study.report()
    else:
        study.run()


if __name__ == "__main__":
    main()
