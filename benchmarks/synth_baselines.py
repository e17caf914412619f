"""How hard is the synthetic dataset? Frame AUCs of trivial and oracle baselines on its test split.

    python benchmarks/synth_baselines.py --preset demo --seed 0 --out /tmp/pivad_synth_demo [--mil]

(a) the L2 norm of each snippet's RGB feature (crop mean) as the anomaly score: must stay near 0.5;
(b) logistic regression on RGB snippets trained on the training videos with *snippet-level oracle
    labels* (never available in weak supervision): roughly what is linearly present in RGB;
(c) the same on the concatenated modality features: how much more clearly they carry the anomaly;
(d) --mil: a small MIL scorer (MLP, top-k BCE, video labels only) on RGB: a cheap stand-in for the
    weakly-supervised baseline, not UR-DMU itself;
(e) --mil: the same MLP with an auxiliary head that regresses the modality features from its hidden
    layer during training (RGB only at test): a cheap probe of π-VAD's premise, not π-VAD itself;
(f) --mil: the MIL scorer of (d) on the concatenated modalities (video labels only; modalities at test).
(g) --mil: an "ideal linear PMG": ridge regression from RGB snippets to the standardised modalities,
    fitted on the training videos (no labels needed), its held-out R² per modality, and the MIL
    scorer of (d) on those predicted modalities (RGB only at test): does the premise hold for a
    pseudo-modality generator that has learnt its regression?
MIL probes: Conv1d(k=3)->128->ReLU->dropout 0.5->score on raw features, 300 Adam steps (lr 1e-4,
weight decay 5e-5, UR-DMU's) of 16 normal + 16 abnormal videos resampled to 32 snippets, top-k BCE.
Oracle labels: a snippet is abnormal when at least half of its 16 frames are.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from pivad.data.synth import class_folder, dataset_plan, frame_gt, make_spec, write_synthetic_dataset


def load(root: Path, plans, modalities: list[str], num_crops: int):
    """Per video: crop-mean RGB [T,D], concatenated modalities [T,M], snippet oracle label [T], frame gt."""
    out = []
    for p in plans:
        folder = class_folder(p)
        rgb = np.mean([np.load(root / "rgb" / folder / f"{p.name}__{c}.npy") for c in range(num_crops)], axis=0)
        mod = np.concatenate([np.load(root / "modalities" / m / f"{p.name}.npy") for m in modalities], axis=1)
        gt = frame_gt(p)
        snip = (gt.reshape(-1, 16).mean(1) >= 0.5).astype(int)
        out.append({"plan": p, "rgb": rgb, "mod": mod, "snip": snip, "gt": gt})
    return out


def frame_auc(videos, scores) -> float:
    s = np.concatenate([np.repeat(x, 16) for x in scores])
    g = np.concatenate([v["gt"] for v in videos])
    return float(roc_auc_score(g, s))


def oracle_scores(train, test, key: str) -> list[np.ndarray]:
    x = np.concatenate([v[key] for v in train])
    y = np.concatenate([v["snip"] for v in train])
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=0.05, max_iter=2000).fit(scaler.transform(x), y)
    return [clf.decision_function(scaler.transform(v[key])) for v in test]


def oracle_lr(train, test, key: str) -> float:
    return frame_auc(test, oracle_scores(train, test, key))


def classwise(test, scores, classes: list[str]) -> dict[str, float]:
    """Frame AUC of each class's test videos together with the normal test videos."""
    out = {}
    for c in classes:
        keep = [i for i, v in enumerate(test) if v["plan"].cls in (c, "Normal")]
        out[c] = round(frame_auc([test[i] for i in keep], [scores[i] for i in keep]), 3)
    return out


def resample(feat: np.ndarray, n: int) -> np.ndarray:
    r = np.linspace(0, len(feat), n + 1, dtype=int)
    return np.stack([feat[r[i] : r[i + 1]].mean(0) if r[i] < r[i + 1] else feat[r[i]] for i in range(n)])


def mil_probe(train, test, aux: bool, seed: int, steps: int = 300, n_seg: int = 32, key: str = "rgb") -> float:
    """UR-DMU's training conditions on a small scorer: raw features, Adam 1e-4 (wd 5e-5), top-k BCE."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xs = torch.tensor(np.stack([resample(v[key], n_seg) for v in train]), dtype=torch.float32)  # (V, N, D)
    ms = torch.tensor(np.stack([resample(v["mod"], n_seg) for v in train]), dtype=torch.float32)  # (V, N, M)
    ys = torch.tensor([v["plan"].label for v in train], dtype=torch.float32)
    mmu, msd = ms.reshape(-1, ms.shape[-1]).mean(0), ms.reshape(-1, ms.shape[-1]).std(0) + 1e-6
    body = nn.Sequential(nn.Conv1d(xs.shape[-1], 128, 3, padding=1), nn.ReLU(), nn.Dropout(0.5))
    head = nn.Conv1d(128, 1, 1)
    dec = nn.Conv1d(128, ms.shape[-1], 1)
    params = list(body.parameters()) + list(head.parameters()) + (list(dec.parameters()) if aux else [])
    opt = torch.optim.Adam(params, lr=1e-4, weight_decay=5e-5)
    nor, abn = np.flatnonzero(ys.numpy() == 0), np.flatnonzero(ys.numpy() == 1)
    k = n_seg // 16 + 1
    for _ in range(steps):
        idx = np.concatenate([rng.choice(nor, 16), rng.choice(abn, 16)])
        hdn = body(xs[idx].transpose(1, 2))  # (B, 128, N)
        s = torch.sigmoid(head(hdn)).squeeze(1)  # (B, N)
        loss = nn.functional.binary_cross_entropy(s.topk(k, dim=1).values.mean(1), ys[idx])
        if aux:
            loss = loss + nn.functional.mse_loss(dec(hdn).transpose(1, 2), (ms[idx] - mmu) / msd)
        opt.zero_grad()
        loss.backward()
        opt.step()
    body.eval()
    with torch.no_grad():
        scores = [torch.sigmoid(head(body(torch.tensor(v[key]).T[None]))).reshape(-1).numpy() for v in test]
    return frame_auc(test, scores)


def ridge_pseudo_modalities(train, test, widths: list[tuple[str, int]], alpha: float = 100.0) -> dict[str, float]:
    """Fit RGB -> standardised modalities (ridge) on the training videos; store ``v["ridge"]`` for every
    video and return the held-out R² per modality."""
    from sklearn.linear_model import Ridge

    y = np.concatenate([v["mod"] for v in train])
    mu, sd = y.mean(0), y.std(0) + 1e-6
    reg = Ridge(alpha=alpha).fit(np.concatenate([v["rgb"] for v in train]), (y - mu) / sd)
    for v in train + test:
        v["ridge"] = reg.predict(v["rgb"]).astype(np.float32)
    pred = np.concatenate([v["ridge"] for v in test])
    real = (np.concatenate([v["mod"] for v in test]) - mu) / sd
    out, lo = {}, 0
    for name, d in widths:
        err = ((pred[:, lo:lo + d] - real[:, lo:lo + d]) ** 2).sum()
        tot = ((real[:, lo:lo + d] - real[:, lo:lo + d].mean(0)) ** 2).sum()
        out[name] = round(float(1 - err / tot), 3)
        lo += d
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/pivad_synth_demo")
    ap.add_argument("--mil", action="store_true", help="also run the MIL probes (d) and (e)")
    ap.add_argument("--mil-seeds", type=int, default=2, help="seeds per MIL probe")
    args = ap.parse_args()
    t0 = time.time()
    root = write_synthetic_dataset(args.out, seed=args.seed, preset=args.preset)
    t_gen = time.time() - t0
    meta = json.loads((root / "meta.json").read_text())
    spec = make_spec(args.preset)
    plans = dataset_plan(spec, args.seed)
    mods = [m["name"] for m in meta["modalities"]]
    train = load(root, [p for p in plans if p.split == "train"], mods, meta["num_crops"])
    test = load(root, [p for p in plans if p.split == "test"], mods, meta["num_crops"])
    res = {"generate_or_reuse_s": round(t_gen, 1)}
    report = lambda key, val: (res.__setitem__(key, val), print(f"{key}: {val}", flush=True))  # noqa: E731
    auc_norm = frame_auc(test, [np.linalg.norm(v["rgb"], axis=1) for v in test])
    report("a_norm_auc", round(auc_norm, 4))
    rgb_scores = oracle_scores(train, test, "rgb")
    report("b_rgb_oracle_lr_auc", round(frame_auc(test, rgb_scores), 4))
    report("b_rgb_classwise", classwise(test, rgb_scores, meta["classes"]))
    report("c_modalities_oracle_lr_auc", round(oracle_lr(train, test, "mod"), 4))
    for m in mods:  # one modality at a time (oracle labels): overall and class-wise frame AUC
        idx = [i for i, x in enumerate(meta["modalities"]) if x["name"] == m][0]
        lo = sum(x["dim"] for x in meta["modalities"][:idx])
        hi = lo + meta["modalities"][idx]["dim"]
        sub_tr = [{**v, "one": v["mod"][:, lo:hi]} for v in train]
        sub_te = [{**v, "one": v["mod"][:, lo:hi]} for v in test]
        scores = oracle_scores(sub_tr, sub_te, "one")
        report(f"c_{m}_oracle_lr_auc", round(frame_auc(sub_te, scores), 4))
        report(f"c_{m}_classwise", classwise(sub_te, scores, meta["classes"]))
    if args.mil:
        for aux in (False, True):
            aucs = [mil_probe(train, test, aux, seed) for seed in range(args.mil_seeds)]
            key = "e_mil_mlp_aux_modalities" if aux else "d_mil_mlp_rgb"
            report(key, [round(a, 4) for a in aucs])
        aucs = [mil_probe(train, test, False, seed, key="mod") for seed in range(args.mil_seeds)]
        report("f_mil_mlp_on_modalities", [round(a, 4) for a in aucs])
        widths = [(m["name"], m["dim"]) for m in meta["modalities"]]
        report("g_ridge_pmg_heldout_r2", ridge_pseudo_modalities(train, test, widths))
        aucs = [mil_probe(train, test, False, seed, key="ridge") for seed in range(args.mil_seeds)]
        report("g_mil_mlp_on_ridge_pseudo_modalities", [round(a, 4) for a in aucs])
    print(json.dumps(res))


if __name__ == "__main__":
    main()
