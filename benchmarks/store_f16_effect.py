"""What the float16 feature cache does to a trained model: the demo's UR-DMU teacher, float32 against float16.

Writes the synthetic demo dataset (``pivad data synth``, seed 0), then trains the UR-DMU teacher of
``configs/demo.yaml`` twice with the same seed: ``data.storage memory`` on the float32 files, and
``data.storage mmap`` with ``data.cache_dtype float16``. Each run's val-selected ``best.pt`` is scored
on the test set read the same way it was trained; the frame metrics, the largest difference of a
frame score and of the final weights go to ``results/issue11/store_f16_effect.json``.

    python benchmarks/store_f16_effect.py --out /tmp/f16_effect [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def run(out: Path, threads: int) -> dict:
    from pivad.commands.demo import demo_config
    from pivad.config import merge_dict, to_dict, from_dict
    from pivad.data.datasets import build_datasets
    from pivad.data.synth import write_synthetic_dataset
    from pivad.engine.checkpoint import load_model
    from pivad.engine.evaluate import GroundTruth, evaluate_model
    from pivad.engine.trainer import train

    data = write_synthetic_dataset(out / "demo_data", seed=0, preset="demo")
    base = demo_config(None, [], data, out)
    result, scores, weights = {}, {}, {}
    for name, data_over in (("float32", {"storage": "memory", "cache_dtype": "none"}),
                            ("float16", {"storage": "mmap", "cache_dtype": "float16"})):
        cfg = from_dict(merge_dict(to_dict(base), {"data": data_over, "train": {"model": "urdmu", "threads": threads}}))
        run_dir = out / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        trained = train(cfg, run_dir, progress=False)
        model, _, _ = load_model(run_dir / "best.pt")
        test = build_datasets(cfg, train=False, progress=False).test
        ev = evaluate_model(model.eval(), test, GroundTruth.from_config(cfg), batch_crops=cfg.eval.batch_crops)
        result[name] = {"best": trained.best, **{k: v for k, v in ev.metrics.items() if isinstance(v, (int, float))}}
        scores[name] = np.concatenate([v.scores for v in ev.videos])
        weights[name] = trained.model.state_dict()
    result["max_frame_score_diff"] = float(np.abs(scores["float32"] - scores["float16"]).max())
    result["max_final_weight_diff"] = max(float((weights["float32"][k] - weights["float16"][k]).abs().max())
                                          for k in weights["float32"] if weights["float32"][k].is_floating_point())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/pivad_f16_effect"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "issue11" / "store_f16_effect.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.out, args.threads)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
