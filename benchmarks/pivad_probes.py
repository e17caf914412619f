"""Where does a trained π-VAD lose the anomaly signal? Probes of one run on its synthetic dataset.

    python benchmarks/pivad_probes.py --run STUDY/runs/base/d0_s1 --data STUDY/data/seed0 [--ckpt best]

For the run's π-VAD checkpoint, on the synthetic dataset it was trained on:
- PMG reconstruction R² per modality and PI position on the *test* videos (held out from training),
  in the space PMG is trained in (standardised when ``inductor.pmg_standardize``);
- the frame AUC of the same weakly-supervised MIL probe (``synth_baselines.mil_probe``: video labels
  only, UR-DMU's optimiser) trained on the training videos' RGB, real modalities, and the early and
  late pseudo-modalities (crop means), evaluated on the test videos;
- the frame AUC of the model's own scores.
If the pseudo-modalities are as easy for the probe as the real ones while the model's scores are not,
the signal is lost downstream of PMG (CMI, distillation, head); if they are no easier than RGB, PMG
never extracted it. Results print as JSON (``--json`` writes them too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth_baselines import frame_auc, load, mil_probe  # noqa: E402

from pivad.data.synth import dataset_plan, make_spec  # noqa: E402
from pivad.engine.checkpoint import load_model  # noqa: E402


@torch.no_grad()
def pseudo_modalities(model, root: Path, video: dict, num_crops: int) -> dict[str, np.ndarray]:
    """Crop-mean pseudo-modalities ``{position: [T, Σd_j]}`` and scores ``[T]`` of one video."""
    from pivad.data.synth import class_folder

    p = video["plan"]
    x = torch.tensor(np.stack([np.load(root / "rgb" / class_folder(p) / f"{p.name}__{c}.npy")
                               for c in range(num_crops)]))  # (C, T, D)
    captured: dict[str, torch.Tensor] = {}

    def hook(pos: str):
        pi = model.inductors[pos]

        def run(f: torch.Tensor) -> torch.Tensor:
            pse = pi.inputs(f, None, x)  # PMG reads F* or, with inductor.pmg_input rgb, the RGB x
            captured[pos] = torch.cat([pse[n] for n in pi.cmi.names], dim=-1).mean(0)  # (T, Σd)
            return pi(f, None, x).out

        return run

    hooks = {pos: hook(pos) for pos in model.inductors}
    scores = model.student(x, early=hooks.get("early"), late=hooks.get("late")).mean(0)  # (T,)
    out = {f"pse_{k}": v.numpy() for k, v in captured.items()}
    out["score"] = scores.numpy()
    return out


def r2_by_modality(test: list[dict], key: str, widths: list[tuple[str, int]], pi) -> dict[str, float]:
    """1 − SSE/SST per modality over all test snippets, in PMG's target space."""
    pred = np.concatenate([v[key] for v in test])  # (ΣT, Σd)
    real = torch.tensor(np.concatenate([v["mod"] for v in test]))
    out, lo = {}, 0
    for name, d in widths:
        target = pi.normalise({name: real[:, lo:lo + d]})[name].numpy()
        err = ((pred[:, lo:lo + d] - target) ** 2).sum()
        tot = ((target - target.mean(0)) ** 2).sum()
        out[name] = round(float(1 - err / tot), 4)
        lo += d
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="π-VAD run folder (best.pt / last.pt)")
    ap.add_argument("--data", required=True, help="its synthetic dataset folder (meta.json inside)")
    ap.add_argument("--ckpt", default="best", choices=("best", "last"))
    ap.add_argument("--probe-seeds", type=int, default=2)
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.data)
    meta = json.loads((root / "meta.json").read_text())
    model, cfg, info = load_model(Path(args.run) / f"{args.ckpt}.pt")
    if info["kind"] != "pivad" or cfg.inductor.modality_source != "pseudo":
        raise SystemExit(f"{args.run}: a π-VAD run with pseudo modalities is needed")
    model.eval()
    plans = dataset_plan(make_spec(meta["preset"]), meta["seed"])
    widths = [(m["name"], m["dim"]) for m in meta["modalities"]]
    names = [n for n, _ in widths]
    train = load(root, [p for p in plans if p.split == "train"], names, meta["num_crops"])
    test = load(root, [p for p in plans if p.split == "test"], names, meta["num_crops"])
    for v in train + test:
        v.update(pseudo_modalities(model, root, v, meta["num_crops"]))
    res: dict = {"run": args.run, "ckpt": args.ckpt, "model_frame_auc": round(frame_auc(test, [v["score"] for v in test]), 4)}
    for pos, pi in model.inductors.items():
        res[f"r2_{pos}"] = r2_by_modality(test, f"pse_{pos}", widths, pi)
    for key in ["rgb", "mod"] + [f"pse_{p}" for p in model.inductors]:
        res[f"mil_probe_{key}"] = [round(mil_probe(train, test, False, s, key=key), 4) for s in range(args.probe_seeds)]
    text = json.dumps(res)
    print(text)
    if args.json:
        from pivad.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")


if __name__ == "__main__":
    main()
