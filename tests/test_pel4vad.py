"""PEL4VAD: parity with the official code (run on CPU from the mirrored snapshot), smoothing, prompts, checkpoints.

The official repository (yujiangpu20/PEL4VAD) is read from ``$PIVAD_OFFICIAL_MIRRORS/yujiangpu20+PEL4VAD/repo``
(a bare git repository; default ``/work/.mirror``), extracted to a temporary folder with its CUDA calls
removed; nothing of it is kept in the project.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pivad.config import PEL4VADConfig, URDMUConfig
from pivad.data.prompts import load_prompts
from pivad.losses.pel4vad import pel4vad_loss
from pivad.models.pel4vad import PEL4VAD, official_to_pivad, smooth_scores, window_mask

MIRRORS = Path(os.environ.get("PIVAD_OFFICIAL_MIRRORS", "/work/.mirror"))
REPO = MIRRORS / "yujiangpu20+PEL4VAD" / "repo"
FILES = ("configs.py", "layers.py", "loss.py", "model.py", "modules.py", "utils.py")
MODULES = ("configs", "layers", "loss", "model", "modules", "utils")


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official modules (configs, model, loss, utils) imported from a CPU-patched temporary copy."""
    if not REPO.is_dir():
        pytest.skip(f"official PEL4VAD snapshot not found at {REPO} (set PIVAD_OFFICIAL_MIRRORS)")
    src = tmp_path_factory.mktemp("pel4vad_official")
    for name in FILES:
        text = subprocess.run(["git", f"--git-dir={REPO}", "show", f"HEAD:{name}"], check=True,
                              capture_output=True, text=True).stdout
        (src / name).write_text(text.replace(".cuda()", ""))  # CPU shim
    saved = {m: sys.modules.pop(m) for m in MODULES if m in sys.modules}
    sys.path.insert(0, str(src))
    try:
        mods = {m: importlib.import_module(m) for m in MODULES}
    finally:
        sys.path.remove(str(src))
        for m in MODULES:
            sys.modules.pop(m, None)
        sys.modules.update(saved)
    return mods


def _configs(official, dataset: str, dropout: float = 0.1):
    cfg = official["configs"].build_config(dataset)
    cfg.dropout = dropout
    ours = PEL4VADConfig(hidden_dim=cfg.hid_dim, out_dim=cfg.out_dim, heads=cfg.head_num, window=cfg.win_size,
                         gamma=cfg.gamma, bias=cfg.bias, norm=cfg.norm, causal_steps=cfg.t_step, temp=cfg.temp,
                         lamda=cfg.lamda, dropout=dropout, smooth=cfg.smooth, kappa=cfg.kappa)
    return cfg, ours


def _pair(official, dataset: str, dropout: float = 0.1, seed: int = 0):
    cfg, ours_cfg = _configs(official, dataset, dropout)
    torch.manual_seed(seed)
    off = official["model"].XModel(cfg)
    with torch.no_grad():  # move the prior and mix away from their init values
        off.self_attention.self_attn.alpha.fill_(0.3)
    prompts = load_prompts(f"builtin:{dataset}")
    ours = PEL4VAD.from_official_state_dict(off.state_dict(), URDMUConfig(), ours_cfg, prompts)
    return cfg, off, ours


@pytest.mark.parametrize("dataset", ["ucf", "xd"])
def test_eval_scores_with_smoothing_match_official(official, dataset):
    cfg, off, ours = _pair(official, dataset)
    x = torch.randn(5, 37, 1024)  # the crops of one video, as the official test loader batches them
    seq_len = torch.full((5,), 37)
    with torch.no_grad():
        logits, x_v = off.eval()(x, seq_len)
        raw = logits.mean(0).squeeze(-1)  # (T,)
        smooth = getattr(official["utils"], f"{cfg.smooth}_smooth")(raw, cfg.kappa)[: len(raw)]
        got = ours.eval()(x.unsqueeze(0))  # (1, T), smoothed
        torch.testing.assert_close(got[0], smooth, rtol=0, atol=1e-5)
        ours.cfg.smooth = "none"
        torch.testing.assert_close(ours(x.unsqueeze(0))[0], raw, rtol=0, atol=1e-5)
        feats = ours.hook_features(x, ["embed"])
        torch.testing.assert_close(feats["embed"], x_v.permute(0, 2, 1), rtol=0, atol=1e-5)


def test_smoothing_matches_official_for_both_modes_and_odd_lengths(official):
    u = official["utils"]
    for T in (1, 6, 7, 23):
        s = torch.rand(T)
        for k in (2, 3, 7, 10):
            torch.testing.assert_close(smooth_scores(s[None], "fixed", k)[0], u.fixed_smooth(s, k)[:T], atol=1e-6, rtol=0)
            torch.testing.assert_close(smooth_scores(s[None], "slide", k)[0], u.slide_smooth(s, k)[:T], atol=1e-6, rtol=0)


def test_window_mask_matches_official(official):
    enc = official["modules"].XEncoder(16, 8, 10, 1, 5, 0.0, 0.6, 0.2)
    for T, w in ((1, 5), (4, 5), (12, 9), (12, 4)):
        want = enc.get_mask(w, T, torch.ones(1))[0, 0].bool()
        assert torch.equal(window_mask(T, w), want)


@pytest.mark.parametrize("dataset", ["ucf", "xd"])
def test_training_loss_and_gradients_match_official(official, dataset):
    cfg, off, ours = _pair(official, dataset, dropout=0.0)
    T, D = 40, 1024
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, T, D, generator=g)
    lengths = torch.tensor([40, 29, 40, 17])
    for i, n in enumerate(lengths):
        x[i, n:] = 0  # zero padding, as the official loader pads short videos
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    classes = torch.tensor([0, 0, 3, 5])
    table = ours.prompts
    t_input = torch.stack([table[[0, int(c)]] for c in classes])  # (B, 2, 512): normal prompt, own class prompt

    # the official train_func step, on CPU
    off.train()
    seq_len = torch.sum(torch.max(torch.abs(x), dim=2)[0] > 0, 1)
    logits, v_feat = off(x, seq_len)
    utils, loss = official["utils"], official["loss"]
    video_feat, token_feat, video_labels = utils.get_cas(v_feat, t_input, logits, classes)
    v2t, _ = utils.create_logits(video_feat, token_feat, off.logit_scale.exp())
    truth = torch.tensor(utils.gen_label(video_labels), dtype=v_feat.dtype)
    loss2 = loss.KLV_loss(v2t, truth, torch.nn.KLDivLoss(reduction="batchmean"))
    loss1 = loss.CLAS2(logits, labels, seq_len, torch.nn.BCELoss())
    want = loss1 + cfg.lamda * loss2
    want.backward()

    out = ours.train()(x)
    assert torch.equal(out.lengths, lengths)
    torch.testing.assert_close(out.scores, logits.squeeze(-1), rtol=0, atol=1e-5)
    got, parts = pel4vad_loss(out, labels, lamda=cfg.lamda, classes=classes)
    got.backward()
    assert abs(parts["mil_bce"].item() - loss1.item()) <= 1e-5
    assert abs(parts["prompt_kl"].item() - float(loss2.detach())) <= 1e-5
    assert abs(got.item() - want.item()) <= 1e-5
    want_grads = official_to_pivad({k: p.grad for k, p in off.named_parameters()})
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_binary_labels_pair_anomalies_with_the_mean_anomaly_prompt(official):
    _, _, ours = _pair(official, "ucf", dropout=0.0)
    out = ours.train()(torch.randn(4, 20, 1024))
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    mean_prompt = torch.cat([ours.prompts[:1], ours.prompts[1:].mean(0, keepdim=True)])
    got, _ = pel4vad_loss(out, labels)
    out.prompts = mean_prompt
    want, _ = pel4vad_loss(out, labels, classes=labels.long())
    assert torch.equal(got, want)


def test_official_checkpoint_loads_and_rejects_other_weights(official, tmp_path):
    from pivad.config import Config
    from pivad.engine.checkpoint import load_inference_model
    from pivad.errors import CheckpointError

    _, off, _ = _pair(official, "ucf")
    path = tmp_path / "ucf__random.pkl"
    torch.save({f"module.{k}": v for k, v in off.state_dict().items()}, path)  # DataParallel prefixes load too
    cfg = Config()
    cfg.model.backbone = "pel4vad"
    model, _, meta = load_inference_model(path, cfg)
    assert meta == {**meta, "kind": "pel4vad", "source": "official"} and isinstance(model, PEL4VAD)
    x = torch.randn(1, 3, 12, 1024)
    with torch.no_grad():
        want = official["utils"].slide_smooth(off.eval()(x[0], torch.full((3,), 12))[0].mean(0).squeeze(-1), 7)[:12]
        torch.testing.assert_close(model(x)[0], want, rtol=0, atol=1e-5)
    torch.save({"embed.weight": torch.zeros(2, 2)}, tmp_path / "other.pkl")
    with pytest.raises(CheckpointError, match="other.pkl"):
        load_inference_model(tmp_path / "other.pkl", cfg)


def test_shipped_prompts_are_the_official_tables():
    for name, rows in (("ucf", 14), ("xd", 7), ("sh", 14)):
        table = load_prompts(f"builtin:{name}")
        assert table.shape == (rows, 512) and torch.isfinite(table).all()
    assert (Path(load_prompts.__code__.co_filename).parent.parent / "prompts" / "LICENSE").is_file()


def test_hooks_replace_features_and_every_parameter_trains():
    cfg = PEL4VADConfig(hidden_dim=8, out_dim=6, window=3, causal_steps=3, dropout=0.0, smooth="fixed", kappa=2)
    model = PEL4VAD(URDMUConfig(input_dim=16), cfg)
    assert model.hook_points == {"context": 16, "embed": 8, "head": 6}
    x = torch.randn(4, 9, 16)
    seen = {}

    def spy(name):
        def fn(f):
            seen[name] = f.shape
            return f * 0.5
        return fn

    out = model.train()(x, hooks={p: spy(p) for p in model.hook_points})
    assert seen == {"context": (4, 9, 16), "embed": (4, 9, 8), "head": (4, 9, 6)}
    loss, _ = pel4vad_loss(out, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    with torch.no_grad():
        scores = model.eval()(x.view(2, 2, 9, 16))
        assert scores.shape == (2, 9) and torch.isfinite(scores).all()
        assert not torch.allclose(model(x.view(2, 2, 9, 16), hooks={"head": lambda f: f * 0}), scores)


def test_evaluate_cli_on_an_official_checkpoint(official, tiny_dataset, tmp_path, capsys):
    """``pivad evaluate --ckpt OFFICIAL.pkl -c CONFIG`` with the official model's random init (UCF config)."""
    import json

    import yaml

    from pivad.cli import main
    from pivad.config import to_dict
    from test_resume import tiny_config

    _, off, _ = _pair(official, "ucf")
    pkl = tmp_path / "ucf__random.pkl"
    torch.save(off.state_dict(), pkl)
    cfg = tiny_config(tiny_dataset, model={"backbone": "pel4vad"}, pel4vad={"prompts": "builtin:ucf"})
    path = tmp_path / "pel4vad_tiny.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert main(["evaluate", "--ckpt", str(pkl), "-c", str(path), "--no-progress", "--no-plots",
                 "--out", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["models"]["model"]
    assert metrics["kind"] == "pel4vad" and 0.0 <= metrics["auc"] <= 1.0
    assert main(["evaluate", "--ckpt", str(pkl), "--no-progress", "--no-plots", "--out", str(tmp_path / "f")]) == 2
    assert "add -c CONFIG" in capsys.readouterr().err
