"""The backbone interface: UR-DMU, PEL4VAD and RTFM implement it, positions map to hook points, models import no losses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from pivad.config import InductorConfig, LossConfig, ModalityConfig, PEL4VADConfig, RTFMConfig, URDMUConfig
from pivad.losses.inductor import pivad_loss
from pivad.models import PEL4VAD, PIVAD, URDMU, RTFMBackbone
from pivad.models.backbone import Backbone, resolve_points

MODELS = Path(__file__).resolve().parent.parent / "src" / "pivad" / "models"
MODS = [ModalityConfig("pose", 5)]


def tiny_urdmu() -> URDMU:
    return URDMU(URDMUConfig(input_dim=16, hidden_dim=8, depth=1, heads=2, dim_head=4, mlp_dim=8, a_nums=4,
                             n_nums=4, head_dim=8))


def tiny_pel4vad() -> PEL4VAD:
    return PEL4VAD(URDMUConfig(input_dim=16), PEL4VADConfig(hidden_dim=8, out_dim=6, window=3, causal_steps=3))


def tiny_rtfm() -> RTFMBackbone:
    return RTFMBackbone(RTFMConfig(feature_dim=16, branch_dim=4, fc1_dim=8, fc2_dim=6))


def test_no_model_module_imports_the_losses():
    for path in MODELS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("pivad.losses"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("pivad.losses") for a in node.names), path.name


@pytest.mark.parametrize("build", [tiny_urdmu, tiny_pel4vad, tiny_rtfm])
def test_backbones_implement_the_interface(build):
    model = build()
    assert isinstance(model, Backbone) and model.input_dim == 16
    x = torch.randn(4, 10, 16)
    for position in ("early", "late", "both"):
        points = resolve_points(model, position)
        feats = model.eval().hook_features(x, points)
        assert all(feats[p].shape == (4, 10, model.hook_points[p]) for p in points)
    assert model.eval()(x.view(2, 2, 10, 16)).shape == (2, 10)


def test_positions_name_hook_points_and_unknown_ones_are_refused():
    pel = tiny_pel4vad()
    assert resolve_points(pel, "both") == ("embed", "head")
    assert resolve_points(pel, "head+context") == ("context", "head")  # forward order
    with pytest.raises(ValueError, match="early, late, both|known"):
        resolve_points(pel, "embed+memory")
    assert resolve_points(tiny_urdmu(), "both") == ("early", "late")


def test_urdmu_hooks_mapping_equals_its_early_and_late_arguments():
    torch.manual_seed(0)
    model = tiny_urdmu().eval()
    x = torch.randn(2, 9, 16)
    early, late = (lambda f: f * 0.5), (lambda f: f + 1.0)
    with torch.no_grad():
        assert torch.equal(model(x, hooks={"early": early, "late": late}), model(x, early=early, late=late))


def test_pivad_on_pel4vad_trains_every_parameter_with_pis_at_its_points():
    torch.manual_seed(0)
    ind = InductorConfig(position="context+head", latent_dim=8, cmi_depth=1, cmi_heads=2)
    model = PIVAD(URDMUConfig(input_dim=16), ind, LossConfig(), MODS, backbone=tiny_pel4vad)
    assert set(model.inductors) == {"context", "head"}
    model.set_teacher(tiny_pel4vad())
    with pytest.raises(TypeError, match="PEL4VAD"):
        model.set_teacher(tiny_urdmu())
    x, mods = torch.randn(4, 10, 16), {"pose": torch.randn(4, 10, 5)}
    out = model.train()(x, modalities=mods, phase="second")
    loss, parts = pivad_loss(out, torch.tensor([0.0, 0.0, 1.0, 1.0]), model.loss_cfg, "second")
    loss.backward()
    assert {"context/distill", "head/align", "mil/prompt_kl"} <= parts.keys()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(p.grad is None for p in model.teacher.parameters())
    with torch.no_grad():
        assert model.eval()(x.view(2, 2, 10, 16)).shape == (2, 10)


def test_pivad_on_rtfm_trains_every_parameter_with_pis_at_its_points():
    torch.manual_seed(0)
    ind = InductorConfig(position="mtn+fc2", latent_dim=8, cmi_depth=1, cmi_heads=2)
    model = PIVAD(URDMUConfig(input_dim=16), ind, LossConfig(), MODS, backbone=tiny_rtfm)
    assert set(model.inductors) == {"mtn", "fc2"} and resolve_points(model.student, "both") == ("mtn", "fc1")
    model.set_teacher(tiny_rtfm())
    x, mods = torch.randn(4, 10, 16), {"pose": torch.randn(4, 10, 5)}
    out = model.train()(x, modalities=mods, phase="second")
    loss, parts = pivad_loss(out, torch.tensor([0.0, 0.0, 1.0, 1.0]), model.loss_cfg, "second")
    loss.backward()
    assert {"mtn/distill", "fc2/align", "mil/loss_cls", "mil/loss_rtfm"} <= parts.keys()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(p.grad is None for p in model.teacher.parameters())
    with torch.no_grad():
        assert model.eval()(x.view(2, 2, 10, 16)).shape == (2, 10)


def test_rtfm_trains_each_crop_row_as_a_one_crop_video():
    """The backbone's train forward on pivad's ``[B, T, F]`` rows is RTFM's on ``[B, 1, T, F]`` one-crop videos,
    and its eval forward is the crop-mean ``snippet_scores``."""
    from pivad.losses.backbone import backbone_loss
    from pivad.losses.rtfm import rtfm_loss
    from pivad.models.rtfm import RTFM

    torch.manual_seed(0)
    model = tiny_rtfm().train()
    x, labels = torch.randn(4, 10, 16), torch.tensor([0.0, 0.0, 1.0, 1.0])
    torch.manual_seed(1)
    got, parts = backbone_loss(model(x), labels)
    torch.manual_seed(1)
    want, _ = rtfm_loss(RTFM.forward(model, x[:, None]), labels, model.cfg)
    assert torch.equal(got, want) and set(parts) >= {"loss_cls", "loss_rtfm", "loss_smooth", "loss_sparse"}
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x.view(2, 2, 10, 16)), model.snippet_scores(x.view(2, 2, 10, 16)))
    with pytest.raises(ValueError, match="train mode expects"):
        model.train()(x.view(2, 2, 10, 16))


@pytest.mark.parametrize("backbone", ["urdmu", "pel4vad", "rtfm"])
def test_config_knows_each_backbones_hook_points(backbone):
    """The config check reads hook points and placements from tables of its own (no model is built to check
    a config): they must be the models' own, for several widths."""
    from pivad.config import PLACEMENTS, from_dict, hook_points
    from pivad.models.factory import backbone_builder

    for widths in ({}, {"model": {"input_dim": 64, "hidden_dim": 24}, "pel4vad": {"hidden_dim": 8, "out_dim": 20},
                   "rtfm": {"fc1_dim": 24, "fc2_dim": 12}}):
        cfg = from_dict({**widths, "model": {**widths.get("model", {}), "backbone": backbone}, "inductor": {"cmi_heads": 4}})
        model = backbone_builder(cfg)()
        assert hook_points(cfg) == model.hook_points
        assert {k: tuple(v) for k, v in model.placements.items()} == PLACEMENTS[backbone]


def test_position_names_are_checked_with_the_config():
    from pivad.config import from_dict
    from pivad.errors import ConfigError

    from_dict({"model": {"backbone": "pel4vad"}, "inductor": {"position": "context+head", "cmi_heads": 4}})
    with pytest.raises(ConfigError, match=r"inductor.position.*'middle' is not a placement or hook point of urdmu"):
        from_dict({"inductor": {"position": "middle"}})
    with pytest.raises(ConfigError, match=r"inductor.cmi_heads.*300 of pel4vad's hook point 'head'"):
        from_dict({"model": {"backbone": "pel4vad"}, "inductor": {"position": "late", "cmi_heads": 8}})
