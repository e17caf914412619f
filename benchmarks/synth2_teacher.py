"""Calibrate synthetic family 2's difficulty against the UR-DMU teacher (no π-VAD is trained).

    python benchmarks/synth2_teacher.py --out /tmp/f2cal --seed 0 --rgb-event 1.0 \
        --record benchmarks/results/issue20/teacher_calibration.jsonl

Writes (or reuses) the family-2 ``demo`` dataset of data seed ``--seed`` with the difficulty knob
``rgb_event`` (docs/synthetic.md, "Family 2"), trains UR-DMU alone with ``configs/demo.yaml``'s teacher
settings (``train.model urdmu``, one thread, training seed ``--train-seed``: the same config a
``pivad study`` teacher gets) and evaluates its val-selected checkpoint on the test
split. Appends one JSON line (data seed, knob, training seed, frame AUC, AUC_A, video AUC, seconds)
to ``--record``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pivad.commands.demo import demo_config
from pivad.config import merge_dict, to_dict
from pivad.data.synth import write_synthetic_dataset
from pivad.engine.study import run_job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="work folder (data/ and runs/ inside)")
    ap.add_argument("--seed", type=int, required=True, help="data seed")
    ap.add_argument("--rgb-event", type=float, default=None, help="difficulty knob (default: the preset's)")
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--record", required=True, help="JSON-lines file a row is appended to")
    args = ap.parse_args()
    over = {} if args.rgb_event is None else {"rgb_event": args.rgb_event}
    tag = f"s{args.seed}" + ("" if args.rgb_event is None else f"_k{args.rgb_event:g}")
    data = write_synthetic_dataset(Path(args.out) / "data" / tag, seed=args.seed, preset="demo", family=2, **over)
    meta = json.loads((data / "meta.json").read_text())
    cfg = demo_config(None, [], data, data)
    values = merge_dict(to_dict(cfg), {"train": {"seed": args.train_seed, "model": "urdmu", "threads": 1}})
    run = Path(args.out) / "runs" / f"{tag}_t{args.train_seed}"
    out = run_job(values, str(run), ("best",))
    best = out["best"]
    row = {"family": 2, "version": meta["version"], "data_seed": args.seed, "rgb_event": meta["spec"]["rgb_event"],
           "train_seed": args.train_seed, "frame_auc": round(100 * best["auc"], 2),
           "auc_a": round(100 * best["auc_a"], 2) if best.get("auc_a") is not None else None,
           "video_auc": round(100 * best["video_auc"], 2) if best.get("video_auc") is not None else None,
           "step": best.get("step"), "seconds": round(out["seconds"], 1)}
    print(json.dumps(row), flush=True)
    Path(args.record).parent.mkdir(parents=True, exist_ok=True)
    with open(args.record, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
