"""Training and evaluation cost of UR-DMU and π-VAD, against the official UR-DMU figures.

- train: one optimiser step on a UR-DMU-sized batch, 64 normal + 64 abnormal crops x 200 snippets
  x 1024 (π-VAD: step 2, L_second, with the five modalities at configs/ucf_crime.yaml's widths);
  reported as seconds per step and snippets per second. π-VAD at the full 64+64 batch needs more
  memory than a 23 GB machine has (killed by the OOM killer here), so by default it is measured at a
  quarter of the batch and its step time scaled by 4 (cost is linear in the batch; labelled).
- eval: one pass over a test set shaped like UCF-Crime's (290 videos, 10 crops, ΣT = 69,364 snippets
  per crop, longest video 6,749 snippets), random features generated in memory, each video scored whole
  (crops batched, torch.inference_mode) -- the code path of ``pivad evaluate``.

Reference (docs reference.md, official UR-DMU on 2 CPU cores, torch 2.13): 6.6-8.8 s per train step,
about 164 s for the full UCF-Crime test set. Ratios below 1 are faster than the official code.
Timings on a shared machine are noisy: the ratio is the figure to read, and the report says the load.

    python benchmarks/bench_train.py                       # both models, full test set
    python benchmarks/bench_train.py --eval-fraction 0.1   # every 10th video, time scaled by ΣT
    python benchmarks/bench_train.py --skip-train --precisions fp32,bf16   # eval only, fp32 and bf16 models

Eval is also reported as a fraction of the 2048² matmul peak of its dtype (benchmarks/peak.py), measured
in the same run at the start and the end, with the FLOPs of the scored videos counted by FlopCounterMode.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from peak import count_flops, load_average, matmul_peak

REF_STEP_S = (6.6, 8.8)
REF_EVAL_S = 164.0
UCF_SUM_T, UCF_VIDEOS, UCF_MAX_T = 69_364, 290, 6_749
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ucf_crime.yaml"


def ucf_like_lengths(seed: int = 0) -> np.ndarray:
    """290 video lengths (snippets) with ΣT = 69,364 and the longest 6,749, log-normally spread."""
    rng = np.random.default_rng(seed)
    t = rng.lognormal(mean=5.0, sigma=0.9, size=UCF_VIDEOS - 1)
    t = np.maximum(8, np.round(t / t.sum() * (UCF_SUM_T - UCF_MAX_T))).astype(int)
    t[-1] += (UCF_SUM_T - UCF_MAX_T) - t.sum()
    return np.concatenate([[UCF_MAX_T], t])


def build(kind: str, cfg):
    from pivad.models.factory import build_model

    model = build_model(kind, cfg)
    if kind == "pivad":
        model.set_teacher(build_model("urdmu", cfg))
    return model


def train_step_seconds(kind: str, cfg, steps: int, batch_scale: float = 1.0) -> float:
    """Seconds per step at ``batch_scale`` x (64 + 64) crops."""
    from pivad.losses.inductor import pivad_loss
    from pivad.losses.mil import mil_loss

    model = build(kind, cfg).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=5e-5)
    half = max(1, round(cfg.data.batch_normal * batch_scale))
    b, n = 2 * half, cfg.data.num_segments
    x = torch.rand(b, n, cfg.data.feature_dim)  # (128, 200, 1024) at scale 1
    y = torch.cat([torch.zeros(half), torch.ones(half)])
    mods = {m.name: torch.rand(b, n, m.dim) for m in cfg.data.modalities}

    def step() -> None:
        if kind == "urdmu":
            loss, _ = mil_loss(model(x), y)
        else:
            loss, _ = pivad_loss(model(x, modalities=mods, phase="second"), y, cfg.loss, "second")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, lazy inits)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def eval_seconds(kind: str, cfg, fraction: float, batch_crops: int,
                 dtype: torch.dtype = torch.float32, offset: int = 0) -> tuple[float, int, int, float]:
    """Seconds for the scored videos (model time only), how many videos and snippets were scored, and
    their FLOPs. ``dtype``: the model's weights (``model.to(dtype)``; features are cast by the model)."""
    from pivad.engine.evaluate import score_video

    model = build(kind, cfg).eval()
    infer = (model.student_only().eval() if kind == "pivad" else model).to(dtype)
    lengths = ucf_like_lengths()
    every = max(1, round(1 / fraction))
    picked = lengths[offset::every]
    gen = torch.Generator().manual_seed(0)
    total, flops = 0.0, 0.0
    with torch.inference_mode():
        score_video(infer, torch.rand(10, 64, cfg.data.feature_dim), "cpu", batch_crops)  # warm-up
        for t in picked:
            rgb = torch.rand(10, int(t), cfg.data.feature_dim, generator=gen) * 2  # (C, T, D)
            t0 = time.perf_counter()
            score_video(infer, rgb, "cpu", batch_crops)
            total += time.perf_counter() - t0
            flops += count_flops(lambda: score_video(infer, rgb, "cpu", batch_crops))
    return total, len(picked), int(picked.sum()), flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="urdmu,pivad")
    ap.add_argument("--steps", type=int, default=2, help="timed train steps (after one warm-up step)")
    ap.add_argument("--eval-fraction", type=float, default=1.0, help="score every 1/f-th video, scale up")
    ap.add_argument("--batch-crops", type=int, default=10)
    ap.add_argument("--eval-offset", type=int, default=0,
                    help="first video scored (0 = the longest, 6,749 snippets); then every 1/f-th")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--precisions", default="fp32", help="eval model precisions: fp32, bf16 (default fp32)")
    ap.add_argument("--batch-scale", default="urdmu=1,pivad=0.25",
                    help="measure at this fraction of the 64+64 batch and scale the step time up (memory)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from pivad.config import load_config

    cfg = load_config(CONFIG)
    peaks = {p: matmul_peak(getattr(torch, d)) for p, d in (("fp32", "float32"), ("bf16", "bfloat16"))}
    print(f"torch {torch.__version__}, {args.threads} threads, load average {load_average()} "
          f"on {os.cpu_count()} cores; config {CONFIG.name}; matmul peak 2048²: fp32 {peaks['fp32']['gflops']}, "
          f"bf16 {peaks['bf16']['gflops']} GFLOP/s")  # fmt: skip
    print("| model | precision | train step (s) | snippets/s | vs official 6.6-8.8 s | full UCF test (s) "
          "| vs official 164 s | eval GFLOP/s | eval % of peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    scales = {k: float(v) for k, v in (kv.split("=") for kv in args.batch_scale.split(","))}
    eval_rates: list[tuple[str, str, float]] = []
    for kind in args.models.split(","):
        scale = scales.get(kind, 1.0)
        train_cells = "- | - | -"
        if not args.skip_train:
            s = train_step_seconds(kind, cfg, args.steps, scale) / scale  # per full 64+64 step
            snippets = (cfg.data.batch_normal + cfg.data.batch_abnormal) * cfg.data.num_segments
            train_cells = f"{s:.2f} | {snippets / s:,.0f} | {s / REF_STEP_S[1]:.2f}-{s / REF_STEP_S[0]:.2f}x"
        for precision in args.precisions.split(","):
            eval_cell = ratio_eval = rate = frac = "-"
            if not args.skip_eval:
                dtype = torch.bfloat16 if precision == "bf16" else torch.float32
                e, n, t, flops = eval_seconds(kind, cfg, args.eval_fraction, args.batch_crops, dtype, args.eval_offset)
                full = e * UCF_SUM_T / t  # scaled by snippets (exact when every video was scored)
                eval_cell = f"{full:.1f}" + ("" if n == UCF_VIDEOS else f" (scaled from {n} videos, ΣT={t})")
                ratio_eval = f"{full / REF_EVAL_S:.2f}x"
                rate = f"{flops / e / 1e9:.1f}"
                frac = f"{100 * flops / e / 1e9 / peaks[precision]['gflops']:.0f}% (of the start's peak)"
                eval_rates.append((kind, precision, flops / e / 1e9))
            label = kind if scale == 1 or args.skip_train else f"{kind} (measured at {scale:g}x batch)"
            print(f"| {label} | {precision} | {train_cells} | {eval_cell} | {ratio_eval} | {rate} | {frac} |", flush=True)
    again = {p: matmul_peak(getattr(torch, d)) for p, d in (("fp32", "float32"), ("bf16", "bfloat16"))}
    print(f"matmul peak at the end: fp32 {again['fp32']['gflops']}, bf16 {again['bf16']['gflops']} GFLOP/s; "
          f"load average {load_average()}")
    for kind, precision, rate in eval_rates:  # against the better of the two peaks, as the other benchmarks
        best = max(peaks[precision]["gflops"], again[precision]["gflops"])
        print(f"eval {kind} {precision}: {rate:.1f} GFLOP/s = {100 * rate / best:.0f}% of the better {precision} "
              f"peak ({best} GFLOP/s)")


if __name__ == "__main__":
    main()
