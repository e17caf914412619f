"""Peak memory and step time of π-VAD training and evaluation at UCF-Crime's shapes (issue 11).

Train cases: π-VAD step-2 steps (L_second) of 64 normal + 64 abnormal crops x 200 snippets x 1024,
the five modalities of ``configs/ucf_crime.yaml`` at its widths, every width of that config, Adam as the
trainer builds it. Each step is :func:`pivad.engine.trainer.backward_step` (the trainer's forward,
loss and backward at ``train.precision``, in ``train.micro_batch`` micro-batches) and ``Adam.step`` --
the code path of ``pivad train``, on random tensors in memory (no data loading, no evaluation). The
frozen teacher is a random UR-DMU.

    fp32        train.precision fp32, activation_checkpointing false (the defaults)
    fp32_ckpt   fp32, activation_checkpointing true
    bf16_ckpt   bf16 autocast, activation_checkpointing true
    bf16        bf16 autocast, activation_checkpointing false

A suffix ``_mbN`` runs the case with ``train.micro_batch: N`` (``fp32_mb16``: micro-batches of 8 + 8
crops, gradients accumulated; the same step).

Eval case ``eval``: the RGB-only π-VAD (``student_only()``) on one 10-crop video of T = 6,749
snippets (UCF-Crime's longest) in one pass under ``torch.inference_mode``.

Every case runs in a fresh subprocess; its peak RSS is the process's ``VmHWM``, which includes the
model, the optimiser state and the inputs (the RSS before the first step is reported beside it).
Each case also measures the 2048² matmul peak in its own process (``benchmarks/peak.py``); a step's
FLOPs are counted once (``FlopCounterMode``, forward + backward of a 1 + 1 crop step, fp32, no
checkpointing, scaled to the batch: the useful work, recomputation not counted), and the step's
GFLOP/s is reported as a fraction of that peak.

    python benchmarks/bench_memory.py --out benchmarks/results/issue11 --cases fp32,fp32_ckpt,bf16_ckpt,eval
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peak import load_average, matmul_peak  # noqa: E402

CONFIG = HERE.parent / "configs" / "ucf_crime.yaml"
TRAIN_CASES = {"fp32": ("fp32", False), "fp32_ckpt": ("fp32", True), "bf16_ckpt": ("bf16", True),
               "bf16": ("bf16", False)}


def _split_case(case: str) -> tuple[str, int]:
    """``("fp32_ckpt", 16)`` of ``fp32_ckpt_mb16``: the base case and ``train.micro_batch`` (0 without _mbN)."""
    base, _, micro = case.partition("_mb")
    if base not in TRAIN_CASES or (micro and not micro.isdigit()):
        raise SystemExit(f"bench_memory: unknown case {case!r} (train cases: {', '.join(TRAIN_CASES)}, optional _mbN)")
    return base, int(micro or 0)


def parse_case(case: str) -> tuple[str, bool, int]:
    """``(precision, activation_checkpointing, micro_batch)`` of a train case name such as ``fp32_ckpt_mb16``."""
    base, micro = _split_case(case)
    return (*TRAIN_CASES[base], micro)


def case_order(case: str) -> tuple[int, int]:
    if case == "eval":
        return len(TRAIN_CASES), 0
    base, micro = _split_case(case)
    return list(TRAIN_CASES).index(base), micro


def status_gib(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc/self/status, GiB."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 2**20
    raise KeyError(key)


def load_cfg(precision: str = "fp32", checkpointing: bool = False):
    from pivad.config import load_config

    cfg = load_config(CONFIG)
    cfg.train.precision, cfg.train.activation_checkpointing = precision, checkpointing
    return cfg


def build_pivad(cfg):
    from pivad.engine.precision import prepare_model
    from pivad.models.factory import build_model

    model = build_model("pivad", cfg)
    model.set_teacher(build_model("urdmu", cfg))
    return prepare_model(model, cfg.train).train()


def random_batch(cfg, half: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B = 2 * half
    x = torch.rand(B, T, cfg.data.feature_dim, generator=g)  # (B, T, 1024)
    mods = {m.name: torch.rand(B, T, m.dim, generator=g) for m in cfg.data.modalities}  # name -> (B, T, d_j)
    labels = torch.cat([torch.zeros(half), torch.ones(half)])
    return x, labels, mods


def step_flops(T: int) -> int:
    """FLOPs of one fp32 step-2 forward + backward per normal+abnormal crop pair (no recomputation)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pivad.engine.trainer import step_loss

    cfg = load_cfg()
    model = build_pivad(cfg)
    x, labels, mods = random_batch(cfg, 1, T)
    with FlopCounterMode(display=False) as counter:
        loss, _ = step_loss(model, "second", x, labels, mods, cfg)
        loss.backward()
    return int(counter.get_total_flops())


def eval_flops(T: int, crops: int) -> int:
    """FLOPs of the eval forward, counted on the ``meta`` device (nothing computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pivad.models.pivad import PIVADInference

    cfg = load_cfg()
    with torch.device("meta"):
        model = PIVADInference.from_config(cfg.model, cfg.inductor, cfg.data.modalities).eval()
        x = torch.empty(1, crops, T, cfg.data.feature_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------------- children


def child_train(case: str, half: int, T: int, steps: int) -> dict:
    from pivad.engine.trainer import backward_step

    precision, ckpt, micro = parse_case(case)
    peaks = {"fp32": matmul_peak(torch.float32)}
    if precision == "bf16":
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    cfg = load_cfg(precision, ckpt)
    cfg.train.micro_batch = micro
    torch.manual_seed(0)
    model = build_pivad(cfg)
    t = cfg.train
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=t.lr, betas=(0.9, 0.999),
                           weight_decay=t.weight_decay)
    x, labels, mods = random_batch(cfg, half, T)
    rss_before = status_gib("VmRSS")
    seconds, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, _ = backward_step(model, "second", x, labels, mods, cfg)
        opt.step()
        seconds.append(time.perf_counter() - t0)
        losses.append(float(loss))
    return {"case": case, "precision": precision, "activation_checkpointing": ckpt, "micro_batch": micro,
            "crops": 2 * half, "T": T,
            "steps": steps, "step_seconds": seconds, "losses": losses, "rss_before_gib": round(rss_before, 3),
            "peak_rss_gib": round(status_gib("VmHWM"), 3), "peaks": peaks}


def child_eval(T: int, crops: int) -> dict:
    from pivad.models.pivad import PIVADInference

    peaks = {"fp32": matmul_peak(torch.float32)}
    cfg = load_cfg()
    torch.manual_seed(0)
    model = PIVADInference.from_config(cfg.model, cfg.inductor, cfg.data.modalities).eval()
    x = torch.rand(1, crops, T, cfg.data.feature_dim, generator=torch.Generator().manual_seed(0)) * 2
    rss_before = status_gib("VmRSS")
    t0 = time.perf_counter()
    with torch.inference_mode():
        scores = model(x)  # (1, T)
    seconds = time.perf_counter() - t0
    return {"case": "eval", "crops": crops, "T": T, "seconds": seconds, "rss_before_gib": round(rss_before, 3),
            "peak_rss_gib": round(status_gib("VmHWM"), 3), "peaks": peaks,
            "scores_finite": bool(torch.isfinite(scores).all()), "score_mean": float(scores.mean())}


# ---------------------------------------------------------------------------------------------- parent


def run_case(case: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--threads", str(args.threads), "--half", str(args.half),
           "--T", str(args.T), "--steps", str(args.steps), "--eval-T", str(args.eval_T),
           "--eval-crops", str(args.eval_crops)]
    load = load_average()
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        return {"case": case, "error": f"exit {res.returncode}: {res.stderr.strip()[-400:]}", "wall_s": wall,
                "load_before": load, "load_after": load_average()}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out.update(wall_s=round(wall, 1), load_before=load, load_after=load_average())
    return out


def add_fractions(r: dict, flops: dict) -> None:
    if "error" in r:
        return
    if r["case"] == "eval":
        work, secs = flops["eval"], r["seconds"]
    else:
        work, secs = flops["train_pair"] * r["crops"] // 2, r["step_seconds"][-1]
    r["gflops_per_s"] = round(work / secs / 1e9, 2)
    r["fraction_of_peak"] = {k: round(r["gflops_per_s"] / p["gflops"], 3) for k, p in r["peaks"].items()}


def markdown(results: list[dict], meta: dict) -> str:
    lines = [f"torch {meta['torch']}, {meta['threads']} thread(s), {meta['cpus']} cores; {meta['config']}; "
             f"train: {meta['crops']} crops x {meta['T']} snippets, {meta['steps']} step(s) per case; "
             f"eval: 1 video x {meta['eval_crops']} crops x {meta['eval_T']} snippets, one pass",
             "",
             "| case | peak RSS (GB) | RSS before step (GB) | step s (first / last) | last vs fp32 (same micro-batch) | "
             "GFLOP/s | fraction of fp32 peak (peak GFLOP/s) | bf16 peak fraction | load avg before / after |",
             "|---|---|---|---|---|---|---|---|---|"]
    bases = {r.get("micro_batch", 0): r for r in results  # fp32 without checkpointing, per micro-batch size
             if r["case"] != "eval" and _split_case(r["case"])[0] == "fp32" and "error" not in r}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['case']} | failed: {r['error'][:120]} | | | | | | | {r['load_before']} / "
                         f"{r['load_after']} |")
            continue
        gb = r["peak_rss_gib"] * 2**30 / 1e9
        before = r["rss_before_gib"] * 2**30 / 1e9
        if r["case"] == "eval":
            secs, ratio = f"{r['seconds']:.1f}", "-"
        else:
            s = r["step_seconds"]
            secs = f"{s[0]:.1f} / {s[-1]:.1f}"
            base = bases.get(r.get("micro_batch", 0))
            ratio = f"{s[-1] / base['step_seconds'][-1]:.2f}x" if base else "-"
        fp = r["peaks"]["fp32"]
        bf = r["fraction_of_peak"].get("bf16")
        bf_cell = f"{bf:.3f} ({r['peaks']['bf16']['gflops']})" if bf is not None else "-"
        lines.append(f"| {r['case']} | {gb:.2f} | {before:.2f} | {secs} | {ratio} | {r['gflops_per_s']} | "
                     f"{r['fraction_of_peak']['fp32']:.3f} ({fp['gflops']}) | {bf_cell} | "
                     f"{r['load_before']} / {r['load_after']} |")
    lines.append("")
    lines.append(f"FLOPs counted once: {meta['flops']['train_pair'] / 1e9:.1f} GFLOP per normal+abnormal crop pair "
                 f"(forward + backward, fp32, no recomputation); eval {meta['flops']['eval'] / 1e12:.2f} TFLOP.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="fp32,fp32_ckpt,bf16_ckpt,eval")
    ap.add_argument("--half", type=int, default=64, help="normal (= abnormal) crops per step")
    ap.add_argument("--T", type=int, default=200)
    ap.add_argument("--steps", type=int, default=2, help="steps per train case (the last one is compared)")
    ap.add_argument("--eval-T", type=int, default=6749)
    ap.add_argument("--eval-crops", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="folder for NAME.json and NAME.md")
    ap.add_argument("--name", default="memory", help="file name stem of the results in --out")
    ap.add_argument("--merge", action="store_true", help="add to the results already in --out (cases replaced)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        res = child_eval(args.eval_T, args.eval_crops) if args.child == "eval" else \
            child_train(args.child, args.half, args.T, args.steps)
        print(json.dumps(res))
        return
    cases = args.cases.split(",")
    for case in cases:
        if case != "eval":
            parse_case(case)
    flops = {"train_pair": step_flops(args.T), "eval": eval_flops(args.eval_T, args.eval_crops)}
    meta = {"torch": torch.__version__, "threads": args.threads, "cpus": __import__("os").cpu_count(),
            "config": CONFIG.name, "crops": 2 * args.half, "T": args.T, "steps": args.steps,
            "eval_T": args.eval_T, "eval_crops": args.eval_crops, "flops": flops}
    results: list[dict] = []
    if args.merge and args.out and (args.out / f"{args.name}.json").is_file():
        old = json.loads((args.out / f"{args.name}.json").read_text())["results"]
        results = [r for r in old if r["case"] not in cases]
    for case in cases:
        r = run_case(case, args)
        add_fractions(r, flops)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "peaks"}), flush=True)
    results.sort(key=lambda r: case_order(r["case"]))
    text = markdown(results, meta)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
        (args.out / f"{args.name}.md").write_text(text)


if __name__ == "__main__":
    main()
