"""The premise checks of synthetic family 2 (docs/synthetic.md, "Family 2"), measured on one data seed.

    python benchmarks/synth2_premise.py --seed 0 --out /tmp/f2/seed0 [--rgb-event 1.0] [--json r.json]

Writes (or reuses) the family-2 dataset, then measures on its test split, with no π-VAD anywhere:
P1 the RGB feature norm as a score; P2 the weakly-supervised MIL probe of ``synth_baselines`` on RGB
(d) and on the modalities (f); P3 the difference-of-means RGB direction against P4 the logistic
oracle on RGB (snippet labels); P5 the held-out R² of a ridge map RGB -> each standardised modality;
P6 class-wise single-modality oracles; P7 the structure of the plan. Also reported, with no
threshold: the MIL probe on the ridge pseudo-modalities (g) and the modalities' logistic oracle.
Each check prints its value and PASS/FAIL; ``--json`` writes them all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth_baselines import classwise, frame_auc, load, mil_probe, oracle_scores, ridge_pseudo_modalities  # noqa: E402

from pivad.data.synth import plans_of, write_synthetic_dataset  # noqa: E402
from pivad.data.synth_signal import SNIPPET  # noqa: E402


def diff_of_means_scores(train: list[dict], test: list[dict]) -> list[np.ndarray]:
    """Projection on (mean abnormal − mean normal training snippet), oracle snippet labels."""
    x = np.concatenate([v["rgb"] for v in train])
    y = np.concatenate([v["snip"] for v in train]).astype(bool)
    w = x[y].mean(0) - x[~y].mean(0)
    return [v["rgb"] @ w for v in test]


def mlp_oracle_scores(train: list[dict], test: list[dict], seed: int = 0, steps: int = 600) -> list[np.ndarray]:
    """A one-hidden-layer MLP (128, ReLU) on standardised RGB snippets with oracle snippet labels:
    what a *nonlinear* reader finds (an interaction is invisible to a linear one by construction)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = np.concatenate([v["rgb"] for v in train])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = torch.tensor((x - mu) / sd, dtype=torch.float32)
    ys = torch.tensor(np.concatenate([v["snip"] for v in train]), dtype=torch.float32)
    net = nn.Sequential(nn.Linear(xs.shape[1], 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.as_tensor(rng.integers(0, len(xs), 512))
        loss = nn.functional.binary_cross_entropy_with_logits(net(xs[idx]).squeeze(1), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return [net(torch.tensor((v["rgb"] - mu) / sd, dtype=torch.float32)).squeeze(1).numpy() for v in test]


def structure(plans, meta: dict) -> dict:
    """P7: lengths, events per abnormal video, event sizes, class imbalance, distractors in normal videos."""
    abn = [p for p in plans if p.label]
    nor = [p for p in plans if not p.label]
    shares = [(e - s + 1) / (p.n_snippets * SNIPPET) for p in abn for s, e in p.events]
    sizes = [(e - s + 1) / SNIPPET for p in abn for s, e in p.events]
    counts = meta["class_counts"]["train"]
    return {
        "length_min_max": [min(p.n_snippets for p in plans), max(p.n_snippets for p in plans)],
        "length_median": float(np.median([p.n_snippets for p in plans])),
        "events_per_video": {k: sum(len(p.events) == k for p in abn) for k in (1, 2, 3)},
        "event_snippets_min": round(min(sizes), 2),
        "event_share_max": round(max(shares), 3),
        "train_class_counts": counts,
        "class_ratio": round(max(counts.values()) / max(1, min(counts.values())), 2),
        "normal_with_distractors": round(sum(bool(p.distractors) for p in nor) / len(nor), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--out", required=True, help="dataset folder (written or reused)")
    ap.add_argument("--rgb-event", type=float, default=None, help="override the difficulty knob")
    ap.add_argument("--mil-seeds", type=int, default=2)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    over = {} if args.rgb_event is None else {"rgb_event": args.rgb_event}
    root = write_synthetic_dataset(args.out, seed=args.seed, preset=args.preset, family=2, **over)
    meta = json.loads((root / "meta.json").read_text())
    plans = plans_of(meta)
    mods = [m["name"] for m in meta["modalities"]]
    train = load(root, [p for p in plans if p.split == "train"], mods, meta["num_crops"])
    test = load(root, [p for p in plans if p.split == "test"], mods, meta["num_crops"])
    res: dict = {"seed": args.seed, "rgb_event": meta["spec"]["rgb_event"], "version": meta["version"]}
    checks: dict = {}

    def report(key, val):
        res[key] = val
        print(f"{key}: {val}", flush=True)

    def check(name, ok, what):
        checks[name] = {"pass": bool(ok), "what": what}
        print(f"{name}: {'PASS' if ok else 'FAIL'} ({what})", flush=True)

    norm = frame_auc(test, [np.linalg.norm(v["rgb"], axis=1) for v in test])
    report("a_norm_auc", round(norm, 4))
    check("P1", 0.40 <= norm <= 0.65, f"norm AUC {norm:.3f} in [0.40, 0.65]")
    lr = frame_auc(test, oracle_scores(train, test, "rgb"))
    dom = frame_auc(test, diff_of_means_scores(train, test))
    report("b_rgb_oracle_lr_auc", round(lr, 4))
    report("h_rgb_diff_of_means_auc", round(dom, 4))
    check("P3", dom <= lr - 0.05, f"diff-of-means {dom:.3f} <= oracle {lr:.3f} - 0.05")
    check("P4", lr >= 0.75, f"RGB oracle {lr:.3f} >= 0.75")
    mlp = frame_auc(test, mlp_oracle_scores(train, test))
    report("b2_rgb_oracle_mlp_auc", round(mlp, 4))
    check("P4'", mlp >= 0.85, f"RGB MLP oracle {mlp:.3f} >= 0.85 (replaces P4 after iteration 2)")
    report("c_modalities_oracle_lr_auc", round(frame_auc(test, oracle_scores(train, test, "mod")), 4))
    widths = [(m["name"], m["dim"]) for m in meta["modalities"]]
    r2 = ridge_pseudo_modalities(train, test, widths)
    report("g_ridge_pmg_heldout_r2", r2)
    check("P5", all(0.15 <= v <= 0.85 for v in r2.values()), f"ridge R² {r2} all in [0.15, 0.85]")
    per_mod, lo = {}, 0
    for name, d in widths:
        sub_tr = [{**v, "one": v["mod"][:, lo:lo + d]} for v in train]
        sub_te = [{**v, "one": v["mod"][:, lo:lo + d]} for v in test]
        per_mod[name] = classwise(sub_te, oracle_scores(sub_tr, sub_te, "one"), meta["classes"])
        lo += d
    report("c_classwise_by_modality", per_mod)
    best = {c: max(per_mod[m][c] for m in per_mod) for c in meta["classes"]}
    worst = {m: min(per_mod[m].values()) for m in per_mod}
    check("P6", min(best.values()) >= 0.85 and max(worst.values()) <= 0.80,
          f"best per class {best} >= 0.85; worst per modality {worst} <= 0.80")
    d = [mil_probe(train, test, False, s) for s in range(args.mil_seeds)]
    f = [mil_probe(train, test, False, s, key="mod") for s in range(args.mil_seeds)]
    report("d_mil_mlp_rgb", [round(x, 4) for x in d])
    report("f_mil_mlp_on_modalities", [round(x, 4) for x in f])
    check("P2", np.mean(f) - np.mean(d) >= 0.05 and min(f) >= 0.90,
          f"MIL modalities {np.mean(f):.3f} - RGB {np.mean(d):.3f} >= 0.05, modalities >= 0.90")
    g = [mil_probe(train, test, False, s, key="ridge") for s in range(args.mil_seeds)]
    report("g_mil_mlp_on_ridge_pseudo_modalities", [round(x, 4) for x in g])
    st = structure(plans, meta)
    report("structure", st)
    ok7 = (st["length_min_max"][0] >= 24 and st["length_min_max"][1] <= 400 and st["event_snippets_min"] >= 2
           and st["event_share_max"] <= 0.4 and st["class_ratio"] >= 3 and st["normal_with_distractors"] >= 0.4
           and len(meta["classes"]) == 7 and all(st["events_per_video"][k] > 0 for k in (1, 2, 3)))
    check("P7", ok7, "lengths 24-400, 1-3 events of 2 snippets to 40 %, 7 classes ratio >= 3, distractors >= 40 %")
    res["checks"] = checks
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res))
    if args.json:
        from pivad.io import atomic_write_json

        atomic_write_json(args.json, res)


if __name__ == "__main__":
    main()
