"""Resident memory and step time of training with ``data.storage: memory`` against ``mmap`` (issue 11).

Builds (or reuses) a UCF-Crime-shaped training set on disk: ``--videos`` videos (half normal), 10 crop
files ``<root>/<Class>/<video>__<c>.npy`` of float32 ``[T, 1024]`` each, T log-normally spread like
UCF-Crime's (median about 150, mean about 240, longest 6,749 snippets), and the five modality sets of
configs/ucf_crime.yaml's widths (``<root>/modalities/<name>/<video>.npy``, ``[T, d]``). Defaults
give 5.3 GB (ΣT = 107,670 snippets per crop).

Then, each case in a fresh subprocess, it trains UR-DMU (the teacher phase, L_MIL; Trainer's own
setup, loader, ``_to_device`` and loss) for ``--steps`` steps of 64 + 64 crops x 200 snippets, with the
modality sets loaded and batched as a π-VAD run loads them:

- ``model``: the same steps on one random batch of the same shapes, no dataset: the model's own
  footprint (torch, weights, Adam, activations, one batch). Every other case is reported above it.
- ``memory``, ``mmap``, ``mmap_f16`` (mmap reading the float16 copies, ``data.cache_dtype: float16``,
  written beforehand beside the features and timed).

Per case: peak RSS (``VmHWM``) and its excess over ``model``; median step time (batch + forward +
backward + Adam) over the steps after the first, and the median time of ``next(loader)`` alone; the
step's FLOPs (``FlopCounterMode``, first step) over its median time as a fraction of the 2048² float32
matmul peak measured in the same process; ``/proc/loadavg``. The page cache is warmed before the
cases (every file read once) and the sets' own reads warm it again.

    python benchmarks/bench_store.py --root /tmp/pivad_store --steps 6 --threads 1
    python benchmarks/bench_store.py --root /tmp/pivad_store --clean   # delete the set afterwards
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "ucf_crime.yaml"
CLASSES = ("Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents",
           "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism")
CROPS, DIM, MAX_T = 10, 1024, 6_749
CASES = ("model", "memory", "mmap", "mmap_f16")


def modalities() -> list[dict]:
    from pivad.config import load_config

    return [{"name": m.name, "dim": m.dim} for m in load_config(CONFIG).data.modalities]


def lengths(videos: int, seed: int = 0) -> np.ndarray:
    """Snippet counts: log-normal (median e^5 ≈ 148), at least 8, the first one UCF's longest (6,749)."""
    t = np.random.default_rng(seed).lognormal(mean=5.0, sigma=0.9, size=videos)
    t = np.clip(np.round(t), 8, MAX_T).astype(np.int64)
    t[0] = MAX_T
    return t


def build(root: Path, videos: int) -> dict:
    """Write the feature set (skipped when ``root/meta.json`` says it was written with these settings)."""
    meta = {"videos": videos, "crops": CROPS, "dim": DIM, "modalities": modalities(), "version": 1}
    if (root / "meta.json").is_file() and json.loads((root / "meta.json").read_text()) == meta:
        return meta
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(1)
    lines = []
    t0 = time.perf_counter()
    for v, t in enumerate(lengths(videos)):
        normal = v % 2 == 1
        cls = "Training_Normal_Videos_Anomaly" if normal else CLASSES[v // 2 % len(CLASSES)]
        name = f"Normal_Videos{v:04d}_x264" if normal else f"{cls}{v:04d}_x264"
        (root / cls).mkdir(parents=True, exist_ok=True)
        for c in range(CROPS):
            np.save(root / cls / f"{name}__{c}.npy", rng.random((int(t), DIM), dtype=np.float32) * 2)
            lines.append(f"{cls}/{name}__{c}.npy")
        for m in meta["modalities"]:
            (root / "modalities" / m["name"]).mkdir(parents=True, exist_ok=True)
            np.save(root / "modalities" / m["name"] / f"{name}.npy", rng.random((int(t), m["dim"]), dtype=np.float32))
    (root / "list").mkdir(exist_ok=True)
    (root / "list" / "train.list").write_text("\n".join(lines))
    meta["written_s"] = round(time.perf_counter() - t0, 1)
    (root / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "written_s"}))
    return meta


def disk_bytes(root: Path, cache: bool) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        if (".pivad_cache" in dirpath) == cache:
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def warm(root: Path) -> float:
    """Read every file once (page cache warm); seconds taken."""
    t0 = time.perf_counter()
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fp:
                while fp.read(1 << 24):
                    pass
    return time.perf_counter() - t0


def config(root: Path, case: str, threads: int):
    from pivad.config import load_config

    return load_config(CONFIG, {
        "data": {"root": str(root), "train_list": str(root / "list" / "train.list"), "test_list": "",
                 "annotation": "", "modality_root": str(root / "modalities"),
                 "storage": "memory" if case in ("model", "memory") else "mmap",
                 "cache_dtype": "float16" if case == "mmap_f16" else "none"},
        "train": {"model": "urdmu", "device": "cpu", "threads": threads, "eval_every": 10**6},
    })


def status(key: str) -> int:
    """A ``/proc/self/status`` figure in bytes (``VmHWM``, ``VmRSS``)."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def worker(case: str, root: Path, steps: int, threads: int) -> dict:
    """One case in this (fresh) process; returns its figures."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(HERE))
    from peak import load_average, matmul_peak

    from pivad.engine.trainer import Trainer, _to_device
    from pivad.losses.mil import mil_loss

    torch.set_num_threads(threads)
    cfg = config(root, case, threads)
    t0 = time.perf_counter()
    if case == "model":
        from pivad.data.loader import Batch
        from pivad.models.factory import build_model

        n = cfg.data.batch_normal + cfg.data.batch_abnormal
        batch = Batch(torch.rand(n, cfg.data.num_segments, DIM), torch.cat([torch.zeros(n // 2), torch.ones(n // 2)]),
                      {m.name: torch.rand(n, cfg.data.num_segments, m.dim) for m in cfg.data.modalities})
        model = build_model("urdmu", cfg).train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        next_batch = lambda: batch  # noqa: E731
        to_device = lambda b: (b.rgb, b.labels, b.modalities)  # noqa: E731
    else:
        trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="bench_store_")), progress=False)
        trainer._setup()
        model = trainer._phase_model("teacher").train()
        opt = trainer._optimizer(model)
        next_batch = lambda: next(trainer.loader)  # noqa: E731
        to_device = lambda b: _to_device(b, trainer.info, cfg.data.batch_normal, trainer.device)  # noqa: E731
    setup_s = time.perf_counter() - t0
    rss_setup = status("VmRSS")
    peak = matmul_peak(torch.float32)
    data_s, step_s, cpu_s, losses, flops = [], [], [], [], 0
    for step in range(steps):
        counter = FlopCounterMode(display=False) if step == 0 else None
        t0, c0 = time.perf_counter(), time.process_time()
        batch = next_batch()
        t1 = time.perf_counter()
        rgb, labels, _ = to_device(batch)
        if counter is not None:
            counter.__enter__()
        loss, _ = mil_loss(model(rgb), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if counter is not None:
            counter.__exit__(None, None, None)
            flops = counter.get_total_flops()
        data_s.append(t1 - t0)
        step_s.append(time.perf_counter() - t0)
        cpu_s.append(time.process_time() - c0)
        losses.append(float(loss.detach()))
    med = statistics.median(step_s[1:])
    return {"case": case, "setup_s": round(setup_s, 2), "rss_setup_gb": rss_setup / 1e9,
            "peak_rss_gb": status("VmHWM") / 1e9, "step_s": step_s, "data_s": data_s, "cpu_s": cpu_s,
            "median_step_s": med, "median_cpu_s": statistics.median(cpu_s[1:]), "loss": losses,
            "median_data_s": statistics.median(data_s[1:]), "step_gflop": flops / 1e9,
            "peak_gflops": peak["gflops"], "fraction_of_peak": flops / med / 1e9 / peak["gflops"],
            "threads": threads, "load": load_average()}


def run_case(case: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, "--root", str(args.root), "--steps", str(args.steps),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"case {case} failed:\n{proc.stderr[-3000:]}")
    out = proc.stdout
    return json.loads(out.strip().splitlines()[-1])


def table(result: dict) -> str:
    model = result["cases"]["model"]
    mem = result["cases"].get("memory")
    rows = ["| case | peak RSS (GB) | above model (GB) | setup (s) | median step (s) | step / memory | "
            "median step CPU (s) | CPU / memory | median batch (s) | fraction of matmul peak | load (1/5/15 min) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in CASES:
        c = result["cases"].get(case)
        if c is None:
            continue
        ratio = f"{c['median_step_s'] / mem['median_step_s']:.3f}" if mem else "-"
        cpu = f"{c['median_cpu_s'] / mem['median_cpu_s']:.3f}" if mem else "-"
        rows.append(f"| {case} | {c['peak_rss_gb']:.2f} | {c['peak_rss_gb'] - model['peak_rss_gb']:.2f} | "
                    f"{c['setup_s']:.1f} | {c['median_step_s']:.2f} | {ratio} | {c['median_cpu_s']:.2f} | {cpu} | "
                    f"{c['median_data_s']:.3f} | "
                    f"{c['fraction_of_peak']:.3f} | {c['load']} |")
    return "\n".join(rows)


def report(result: dict) -> str:
    """store.md: what was measured, then the table."""
    gb = lambda n: f"{n / 1e9:.2f} GB"  # noqa: E731
    mods = ", ".join(f"{m['name']} {m['dim']}" for m in result["modalities"])
    lines = [
        "# Feature storage: memory against mmap (issue 11)",
        "",
        f"UCF-shaped training set on disk: {result['videos']} videos x {result['crops']} crop files float32 "
        f"[T, 1024], ΣT = {result['snippets']:,} snippets per crop, plus five modality sets "
        f"({mods}): "
        f"{gb(result['feature_bytes'])}. UR-DMU teacher training, 64 + 64 crops x 200 snippets per step, "
        f"{result['steps']} steps per case (median over all but the first), torch threads "
        f"{result['threads']}, each case a fresh process, page cache warm.",
        "",
        "`above model` is peak RSS (VmHWM) minus the `model` case's (the same steps on one random batch, "
        "no dataset: torch, weights, Adam, activations, one batch).",
    ]
    if "cache_bytes" in result:
        lines += ["", f"float16 copies: {gb(result['cache_bytes'])}, written (or checked, when already there) "
                      f"in {result['cache_write_s']} s before the cases."]
    diffs = {k: v for k, v in result.items() if k.startswith("loss_max_rel_diff_")}
    if diffs:
        lines += ["", "Largest relative difference of a step's loss from `memory` (same seed, same batches): "
                  + "; ".join(f"{k.removeprefix('loss_max_rel_diff_').removesuffix('_vs_memory')} {v:.3g}"
                              for k, v in diffs.items()) + "."]
    return "\n".join(lines + ["", table(result) if "model" in result["cases"] else ""]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "pivad_store_bench")
    parser.add_argument("--videos", type=int, default=460)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "issue11")
    parser.add_argument("--clean", action="store_true", help="delete the feature set (and its cache) afterwards")
    parser.add_argument("--report", type=Path, help="only rewrite store.md beside this store.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.root, args.steps, args.threads)))
        return
    if args.report:  # rewrite store.md from a store.json
        (args.report.parent / "store.md").write_text(report(json.loads(args.report.read_text())))
        return
    meta = build(args.root, args.videos)
    result = {"videos": args.videos, "crops": CROPS, "snippets": int(lengths(args.videos).sum()),
              "feature_bytes": disk_bytes(args.root, cache=False), "modalities": meta["modalities"],
              "steps": args.steps, "threads": args.threads, "cases": {}}
    cases = [c for c in args.cases.split(",") if c]
    if "mmap_f16" in cases:  # write the float16 copies once, outside the timed case
        from pivad.data.bundle import build_datasets

        t0 = time.perf_counter()
        build_datasets(config(args.root, "mmap_f16", args.threads), test=False, progress=False)
        result["cache_write_s"] = round(time.perf_counter() - t0, 1)
        result["cache_bytes"] = disk_bytes(args.root, cache=True)
    result["warm_s"] = round(warm(args.root), 1)
    for case in cases:
        result["cases"][case] = run_case(case, args)
        print(case, json.dumps({k: v for k, v in result["cases"][case].items()
                                if k not in ("step_s", "data_s", "cpu_s")}),
              file=sys.stderr)
    runs = result["cases"]
    for case in ("mmap", "mmap_f16"):  # same seed, same batches: the losses show what the storage changes
        if case in runs and "memory" in runs:
            a, b = np.array(runs["memory"]["loss"]), np.array(runs[case]["loss"])
            result[f"loss_max_rel_diff_{case}_vs_memory"] = float(np.max(np.abs(a - b) / np.abs(a)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "store.json").write_text(json.dumps(result, indent=1))
    md = report(result)
    (args.out / "store.md").write_text(md)
    print(md)
    if args.clean:
        shutil.rmtree(args.root)


if __name__ == "__main__":
    main()
