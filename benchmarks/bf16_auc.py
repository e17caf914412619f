"""Effect of bf16 inference on scores and metrics: one checkpoint, its test set, fp32 vs bf16.

    python benchmarks/bf16_auc.py --ckpt results/pivad/demo/latest/teacher.pt [-c CONFIG]

Prints the largest snippet-score difference and AUC / AP in both precisions (the same videos, the
same ground truth), plus the eval wall time of each.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from pivad.data.datasets import build_datasets
from pivad.engine.checkpoint import load_inference_model
from pivad.engine.evaluate import GroundTruth, compute_metrics, score_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("-c", "--config", default=None, help="config (default: the one in the checkpoint)")
    args = ap.parse_args()

    cfg = None
    if args.config:
        from pivad.config import load_config

        cfg = load_config(args.config)
    model, cfg, _ = load_inference_model(args.ckpt, cfg)
    test = build_datasets(cfg, train=False).test
    gt = GroundTruth.from_config(cfg)

    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    runs = {}
    for name, fn in (("fp32", model), ("bf16", lambda x, **kw: model_bf16(x.to(torch.bfloat16), **kw))):
        t0 = time.perf_counter()
        with torch.inference_mode():
            videos = score_dataset(fn, test, batch_crops=cfg.eval.batch_crops)
        seconds = time.perf_counter() - t0
        gt.attach(videos)
        runs[name] = (videos, compute_metrics(videos, cfg.eval.ap_form), seconds)

    diff = max(float(np.abs(a.scores - b.scores).max()) for a, b in zip(runs["fp32"][0], runs["bf16"][0]))
    print(f"checkpoint: {args.ckpt}   test videos: {len(test)}   torch threads: {torch.get_num_threads()}")
    print("| precision | AUC | AUC_A | AP | AP_A | eval s |")
    print("|---|---|---|---|---|---|")
    for name, (_, m, s) in runs.items():
        print(f"| {name} | {100 * m['auc']:.3f} | {100 * m['auc_a']:.3f} | {100 * m['ap']:.3f} | "
              f"{100 * m['ap_a']:.3f} | {s:.2f} |")
    print(f"max |score fp32 - score bf16| over all snippets: {diff:.2e}")


if __name__ == "__main__":
    main()
