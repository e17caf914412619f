"""RTFM: parity with the official code (run on CPU from the fetched snapshot), converter, hooks, loss.

The official repository (tianyu0207/RTFM) has no licence: it is never copied into the project. The
tests extract its snapshot (a bare git mirror) into a temporary folder, patch the copy for CPU and
for a configurable feature width, and import it from there. They skip when the mirror is absent; its
root is ``$PIVAD_OFFICIAL_MIRRORS`` (default ``/work/.mirror``), holding ``tianyu0207+RTFM/repo``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pivad.errors import CheckpointError
from pivad.losses.rtfm import rtfm_loss, select_topk
from pivad.models.rtfm import RTFM, RTFMConfig, official_to_pivad, pivad_to_official

pytestmark = pytest.mark.usefixtures("one_thread")

MIRROR = Path(os.environ.get("PIVAD_OFFICIAL_MIRRORS", "/work/.mirror")) / "tianyu0207+RTFM" / "repo"
OFFICIAL_COMMIT = "cf938f4"
CROPS = 10  # the official forward hard-codes 10 crops (features[0:batch_size * 10])

# (file, text in the snapshot, replacement): CPU, a configurable feature width, no deprecated global
# default-type call. The width patch is the identity at 2048 (len_feature == n_features == 2048).
PATCHES = [
    ("model.py", "self.Aggregate = Aggregate(len_feature=2048)", "self.Aggregate = Aggregate(len_feature=n_features)"),
    ("model.py", "nn.Conv1d(in_channels=2048, out_channels=512, kernel_size=1,",
     "nn.Conv1d(in_channels=len_feature, out_channels=512, kernel_size=1,"),
    ("model.py", "nn.Conv1d(in_channels=2048, out_channels=2048, kernel_size=3,",
     "nn.Conv1d(in_channels=2048, out_channels=len_feature, kernel_size=3,"),
    ("model.py", "nn.BatchNorm1d(2048),", "nn.BatchNorm1d(len_feature),"),
    ("model.py", "torch.set_default_tensor_type('torch.FloatTensor')", ""),
    ("train.py", "torch.set_default_tensor_type('torch.FloatTensor')", ""),
    ("train.py", "label = label.cuda()", "label = label.to(score.device)"),
]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official ``model``, ``train`` and ``test_10crop`` modules, imported from a patched tmp copy."""
    if not MIRROR.is_dir():
        pytest.skip(f"official RTFM snapshot absent: {MIRROR} (PIVAD_OFFICIAL_MIRRORS names the folder that holds tianyu0207+RTFM/repo)")
    if shutil.which("git") is None:
        pytest.skip("git is needed to extract the official RTFM snapshot")
    dest = tmp_path_factory.mktemp("rtfm_official")
    files = ["model.py", "train.py", "test_10crop.py", "option.py", "main.py"]
    blob = subprocess.run(["git", f"--git-dir={MIRROR}", "archive", "--format=tar", "HEAD", *files],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    for name, old, new in PATCHES:
        path = dest / name
        text = path.read_text()
        assert text.count(old) == 1, f"{name}: the patch target {old!r} changed in the snapshot"
        path.write_text(text.replace(old, new))
    mods = {}
    for name in ("model", "train", "test_10crop", "option"):
        spec = importlib.util.spec_from_file_location(f"rtfm_official_{name}", dest / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods[name] = mod
    return SimpleNamespace(dir=dest, **mods)


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Random weights and BatchNorm statistics (the official init zeroes the non-local's output BN)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var") or (name.endswith("weight") and t.dim() == 1):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.05 if t.dim() > 1 else 0.1))


def _pair(official, F: int, batch_size: int = 2, seed: int = 0) -> tuple[torch.nn.Module, RTFM]:
    """An official Model (perturbed) and pivad's RTFM loaded from its state dict."""
    torch.manual_seed(seed)
    ref = official.model.Model(F, batch_size)
    _perturb(ref, seed + 1)
    return ref, RTFM.from_official_state_dict(ref.state_dict())


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5, msg: str = "", floor: float = 0.0) -> None:
    """``max |actual - expected| <= tol * max |expected| + floor``: features and magnitudes reach ~1e2
    after the perturbation, where float32 rounding alone (official code vs float64) is ~1e-4 absolute."""
    assert actual.shape == expected.shape, msg
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= tol * scale + floor, f"{msg}: max diff {err:.3g}, scale {scale:.3g}"


def _x(shape, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("F", [1024, 2048])
def test_seeded_init_matches_official(official, F):
    torch.manual_seed(3)
    ref = official.model.Model(F, 2).state_dict()
    torch.manual_seed(3)
    own = pivad_to_official(RTFM(RTFMConfig(feature_dim=F)).state_dict())
    assert own.keys() == ref.keys()
    for k in ref:
        assert torch.equal(own[k], ref[k]), k


@pytest.mark.parametrize("F", [1024, 2048])
def test_eval_forward_matches_official(official, F):
    ref, own = _pair(official, F)
    ref.eval(), own.eval()
    x = _x((4, CROPS, 6, F), F)  # 2 normal + 2 abnormal videos
    with torch.no_grad():
        r = ref(x)
        out = own(x)
        sel = select_topk(out, k=3, drop=0.0)
    torch.testing.assert_close(out.scores, r[6].squeeze(-1), atol=1e-5, rtol=0)
    _close(out.magnitudes, r[9])
    torch.testing.assert_close(sel.score_abnormal, r[0].squeeze(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(sel.score_normal, r[1].squeeze(-1), atol=1e-5, rtol=0)
    _close(sel.feat_abnormal, r[2])
    _close(sel.feat_normal, r[3])


class _Viz:
    """Stands in for the official visdom wrapper: records what the official code plots."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def plot_lines(self, name, y, **kw):
        self.values[name] = y

    def lines(self, name, line, X=None):
        self.values[name] = line


@pytest.mark.parametrize("F", [1024, 2048])
def test_test_scores_match_official(official, F, monkeypatch):
    """The official test loop (10-crop videos one at a time, crop mean, x16 to frames, AUC)."""
    ref, own = _pair(official, F, seed=5)
    videos = [_x((1, T, CROPS, F), T) for T in (3, 10)]  # the test loader's [1, T, crops, F]
    frames = 16 * sum(v.shape[1] for v in videos)
    gt = (np.arange(frames) % 7 == 0).astype(np.float64)
    (official.dir / "list").mkdir(exist_ok=True)
    np.save(official.dir / "list" / "gt-ucf.npy", gt)
    monkeypatch.chdir(official.dir)  # the official test reads list/gt-ucf.npy and writes fpr.npy etc. here
    viz = _Viz()
    auc = official.test_10crop.test(videos, ref, SimpleNamespace(dataset="ucf"), viz, torch.device("cpu"))
    own.eval()
    with torch.no_grad():
        snippet = torch.cat([own.snippet_scores(v.permute(0, 2, 1, 3))[0] for v in videos])  # (ΣT,)
    pred = np.repeat(snippet.numpy(), 16)
    np.testing.assert_allclose(pred, viz.values["scores"], atol=1e-5, rtol=0)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(gt, pred) == pytest.approx(auc, abs=1e-6)


class _GradRecorder:
    """An optimiser that keeps the gradients the official train step computed (and changes nothing)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.grads = model, {}

    def zero_grad(self) -> None:
        self.model.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.grads = {k: p.grad.clone() for k, p in self.model.named_parameters()}


@pytest.mark.parametrize("F", [1024, pytest.param(2048, marks=pytest.mark.slow)])
def test_train_step_matches_official(official, F):
    """One official train step (dropout on, same seed: same masks) against pivad's forward + rtfm_loss:
    the selection, the loss terms, every gradient and the BatchNorm statistics."""
    bs, T = 2, 32  # the official train step hard-codes 32 segments; batch_size 1 hits its test-time branch
    ref, own = _pair(official, F, batch_size=bs, seed=7)
    ref.train(), own.train()
    xn, xa = _x((bs, CROPS, T, F), 1), _x((bs, CROPS, T, F), 2)
    x = torch.cat([xn, xa])

    # the official train step; its forward's outputs, loss terms and gradients are recorded
    viz, opt, forward_out = _Viz(), _GradRecorder(ref), []
    forward = ref.forward
    ref.forward = lambda *a, **kw: forward_out.append(forward(*a, **kw)) or forward_out[-1]
    loaders = iter([(xn, torch.zeros(bs))]), iter([(xa, torch.ones(bs))])
    torch.manual_seed(12)
    official.train.train(*loaders, ref, bs, opt, viz, torch.device("cpu"))
    torch.manual_seed(12)  # same seed: the same dropout masks, drawn in the same order
    out = own(x)
    sel = select_topk(out, k=3, drop=0.7)
    total, parts = rtfm_loss(out, selection=sel)
    total.backward()
    (r,) = forward_out
    torch.testing.assert_close(sel.score_abnormal, r[0].squeeze(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(sel.score_normal, r[1].squeeze(-1), atol=1e-5, rtol=0)
    _close(sel.feat_abnormal, r[2])
    _close(sel.feat_normal, r[3])
    torch.testing.assert_close(out.scores, r[6].squeeze(-1), atol=1e-5, rtol=0)
    assert total.item() == pytest.approx(viz.values["loss"], abs=1e-5, rel=1e-5)
    assert parts["loss_smooth"].item() == pytest.approx(viz.values["smooth loss"], abs=1e-7, rel=1e-5)
    assert parts["loss_sparse"].item() == pytest.approx(viz.values["sparsity loss"], abs=1e-7, rel=1e-5)
    own_grads = pivad_to_official({k: p.grad for k, p in own.named_parameters()})
    assert own_grads.keys() == opt.grads.keys()
    # gradients: up to 1e-5 of a tensor's largest entry measured (float32 sums in another order), so 5e-5 here;
    # floor: conv biases before a train-mode BatchNorm get ~1e-8 noise (zero in exact maths)
    for k, g in opt.grads.items():
        _close(own_grads[k], g, tol=5e-5, msg=k, floor=1e-7)
    own_sd = pivad_to_official(own.state_dict())
    for k, v in ref.state_dict().items():
        if "running" in k:
            _close(own_sd[k], v, msg=k)


def test_paper_configs_carry_official_defaults(official):
    """configs/rtfm_*.yaml hold the official defaults: option.py's arguments, main.py's optimiser, the
    32 segments of dataset.py (the model's and the loss's constants are checked by the parity tests)."""
    import re

    import yaml

    from conftest import ROOT

    args = official.option.parser.parse_args([])
    lr = eval(args.lr, {})  # noqa: S307 - the official option is a Python list expression
    main = (official.dir / "main.py").read_text()
    (weight_decay,) = re.findall(r"weight_decay=([0-9.e-]+)", main)
    defaults = RTFMConfig()
    for name, width in (("rtfm_ucf.yaml", args.feature_size), ("rtfm_xd.yaml", 1024)):
        cfg = yaml.safe_load((ROOT / "configs" / name).read_text())
        data, model, rtfm, train = cfg["data"], cfg["model"], cfg["rtfm"], cfg["train"]
        assert model["backbone"] == "rtfm", name
        assert data["batch_normal"] == data["batch_abnormal"] == args.batch_size, name
        assert data["num_segments"] == 32, name  # dataset.py: process_feat(feature, 32)
        assert data["feature_dim"] == model["input_dim"] == rtfm["feature_dim"] == width, name
        assert train["lr"] == lr[0] and set(lr) == {lr[0]}, name  # constant rate
        assert train["teacher_steps"] == args.max_epoch == len(lr), name
        assert train["weight_decay"] == float(weight_decay), name
        for key, value in rtfm.items():
            if key != "feature_dim":
                assert value == getattr(defaults, key), f"{name}: rtfm.{key}"


# ------------------------------------------------------------------------------------ converter, API


def test_converter_round_trip_and_errors(official):
    torch.manual_seed(0)
    ref = official.model.Model(1024, 2)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)  # as the official main.py saves its checkpoints
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert set(official_to_pivad(sd)) == set(RTFM(RTFMConfig(feature_dim=1024)).state_dict())
    back = pivad_to_official(RTFM.from_official_state_dict(sd).state_dict())
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    # DataParallel prefix
    model = RTFM.from_official_state_dict({f"module.{k}": v for k, v in sd.items()})
    assert model.cfg.feature_dim == 1024
    bad = dict(sd)
    del bad["fc3.bias"]
    with pytest.raises(CheckpointError, match=r"^ckpt\.pkl: missing keys fc3\.bias$"):
        RTFM.from_official_state_dict(bad, source="ckpt.pkl")
    with pytest.raises(CheckpointError, match=r"^ckpt\.pkl: mtn\.branches\.0\.conv\.weight has shape \[512, 1024, 3\], the model expects \[512, 2048, 3\]$"):
        RTFM.from_official_state_dict(sd, cfg=RTFMConfig(feature_dim=2048), source="ckpt.pkl")


TINY = RTFMConfig(feature_dim=24, branch_dim=8, fc1_dim=12, fc2_dim=6)


def test_hook_points_identity_and_widths():
    torch.manual_seed(0)
    model = RTFM(TINY)
    _perturb(model, 1)
    x = torch.rand(4, 3, 10, 24)
    seen = {}

    def identity(name):
        def hook(t):
            seen[name] = t.shape
            return t

        return hook

    hooks = {name: identity(name) for name in model.hook_widths}
    assert model.hook_widths == {"mtn": 24, "fc1": 12, "fc2": 6}
    for mode in (False, True):
        model.train(mode)
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(1)
        b = model(x, hooks=hooks)
        for field in ("scores", "features", "magnitudes"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert seen == {name: torch.Size([12, 10, w]) for name, w in model.hook_widths.items()}
    model.eval()
    assert torch.equal(model.snippet_scores(x), model(x).scores)
    assert torch.equal(model.snippet_scores(x, hooks), model(x).scores)
    feats = model.features(x)
    assert {k: v.shape[-1] for k, v in feats.items()} == model.hook_widths
    with pytest.raises(ValueError, match="no hook point 'late'"):
        model(x, hooks={"late": lambda t: t})


def test_hooks_change_outputs_and_gradients_reach_everything():
    torch.manual_seed(0)
    model = RTFM(TINY).train()
    _perturb(model, 2)
    adapter = torch.nn.Linear(12, 12)
    x = torch.rand(4, 2, 32, 24)  # 2 normal + 2 abnormal videos, 2 crops
    torch.manual_seed(3)
    total, parts = rtfm_loss(model(x, hooks={"fc1": adapter}), cfg=TINY)
    assert torch.isfinite(total) and set(parts) >= {"loss_cls", "loss_rtfm", "loss_smooth", "loss_sparse"}
    total.backward()
    for name, p in [*model.named_parameters(), *(("adapter." + n, p) for n, p in adapter.named_parameters())]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model.snippet_scores(x), model.snippet_scores(x, {"mtn": lambda t: 2 * t}))


def test_single_crop_input_and_bad_shapes():
    model = RTFM(TINY).eval()
    x = torch.rand(2, 7, 24)
    assert model(x).scores.shape == (2, 7) and model(x).features.shape == (2, 1, 7, 24)
    with torch.no_grad():
        bf16 = RTFM(TINY).eval().to(torch.bfloat16)
        bf16.load_state_dict(model.state_dict())
        scores = bf16.snippet_scores(x)
    assert scores.dtype == torch.float32 and (scores - model.snippet_scores(x)).abs().max() < 2e-2
    with pytest.raises(ValueError, match="24-d"):
        model(torch.rand(2, 7, 25))
    with pytest.raises(ValueError, match="even batch"):
        select_topk(model.train()(torch.rand(3, 32, 24)))


def test_loss_matches_hand_computation():
    """The loss terms from their definitions on a hand-built output (no dropout in the selection)."""
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.9, 0.2, 0.1]])  # normal, abnormal; T = 4
    feats = torch.zeros(2, 1, 4, 2)
    feats[0, 0, :, 0] = torch.tensor([1.0, 4.0, 2.0, 3.0])
    feats[1, 0, :, 1] = torch.tensor([5.0, 1.0, 7.0, 6.0])
    from pivad.models.rtfm import RTFMOutput

    out = RTFMOutput(scores, feats, feats.norm(dim=-1).mean(1))
    cfg = RTFMConfig(topk=2, dropout=0.0)
    total, parts = rtfm_loss(out, cfg=cfg)
    # normal: snippets 1, 3 (magnitudes 4, 3): score (0.2 + 0.4) / 2, feature mean (3.5, 0)
    # abnormal: snippets 2, 3 (7, 6): score (0.2 + 0.1) / 2, feature mean (0, 6.5)
    bce = -(np.log(1 - 0.3) + np.log(0.15)) / 2
    rtfm = (abs(100 - 6.5) + 3.5) ** 2
    smooth = 8e-4 * (0.4**2 + 0.7**2 + 0.1**2)
    sparse = 8e-3 * np.sqrt(0.25 + 0.81 + 0.04 + 0.01)
    assert parts["loss_cls"].item() == pytest.approx(bce, rel=1e-6)
    assert parts["loss_rtfm"].item() == pytest.approx(rtfm, rel=1e-6)
    assert parts["loss_smooth"].item() == pytest.approx(smooth, rel=1e-5)
    assert parts["loss_sparse"].item() == pytest.approx(sparse, rel=1e-6)
    assert total.item() == pytest.approx(bce + 1e-4 * rtfm + smooth + sparse, rel=1e-6)


def test_long_video_needs_no_t_by_t_matrix():
    """The non-local block's reordered product: equal to the official order, no T x T matrix."""
    from pivad.models.rtfm import NonLocal1d

    torch.manual_seed(0)
    block = NonLocal1d(8).eval()
    _perturb(block, 4)
    x = torch.randn(2, 8, 50)
    theta, phi, g = block.theta(x), block.phi(x), block.g(x)
    y = (theta.transpose(1, 2) @ phi / 50 @ g.transpose(1, 2)).transpose(1, 2)  # the official order
    torch.testing.assert_close(block(x), x + block.out_bn(block.out(y)), atol=1e-6, rtol=1e-5)


def test_loss_under_bf16_autocast_and_short_videos():
    """The loss terms stay float32 under autocast; videos shorter than k select all their snippets."""
    torch.manual_seed(0)
    model = RTFM(TINY).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(4, 2, 2, 24))  # T = 2 < k = 3
        total, parts = rtfm_loss(out, cfg=TINY)
    assert out.scores.dtype == torch.bfloat16 and total.dtype == torch.float32 and torch.isfinite(total)
    assert select_topk(out, k=3, drop=0.0).feat_abnormal.shape == (4, 2, 24)
