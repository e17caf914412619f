"""π-VAD on tiny widths: gradients per training step, the frozen teacher, the inference view, shapes."""

from __future__ import annotations

import pytest
import torch

from pivad.config import Config, InductorConfig, LossConfig, ModalityConfig, URDMUConfig
from pivad.losses.inductor import inductor_terms, pivad_loss
from pivad.models import PIVAD, URDMU, PIVADInference, PIVADOutput, build_model

MODS = [ModalityConfig("pose", 5), ModalityConfig("depth", 3)]


def tiny_model_cfg() -> URDMUConfig:
    return URDMUConfig(input_dim=16, hidden_dim=8, depth=1, heads=2, dim_head=4, mlp_dim=8, a_nums=4, n_nums=4,
                       head_dim=8)


def tiny_pivad(position="both", source="pseudo", **loss) -> PIVAD:
    ind = InductorConfig(position=position, latent_dim=8, cmi_depth=2, cmi_heads=2, cmi_mlp_ratio=2.0,
                         modality_source=source)
    model = PIVAD(tiny_model_cfg(), ind, LossConfig(**loss), MODS)
    model.set_teacher(URDMU(tiny_model_cfg()))
    return model


def batch(B=4, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 16, generator=g)
    mods = {m.name: torch.randn(B, T, m.dim, generator=g) for m in MODS}
    return x, mods, torch.tensor([0.0] * (B // 2) + [1.0] * (B // 2))


def _step(model, phase, T=12):
    x, mods, labels = batch(T=T)
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x, modalities=mods, phase=phase)
    loss, parts = pivad_loss(out, labels, model.loss_cfg, phase)
    loss.backward()
    return out, loss, parts


def _without_grad(module, prefix=""):
    return sorted(prefix + n for n, p in module.named_parameters() if p.grad is None)


@pytest.mark.parametrize("position", ["early", "late", "both"])
@pytest.mark.parametrize("phase", ["first", "second"])
def test_every_trainable_parameter_gets_a_gradient_and_the_teacher_none(position, phase):
    torch.manual_seed(0)
    model = tiny_pivad(position)
    _step(model, phase)
    assert _without_grad(model.inductors) == []
    missing = _without_grad(model.student)
    if phase == "second":
        assert missing == []
    elif position == "early":  # L_first stops at the early PI: nothing after it is computed
        trained = {"embed.weight", "embed.bias"}
        assert set(missing) == {n for n, _ in model.student.named_parameters()} - trained
    else:  # the late PI reads the head's input: only the classifier head is downstream of L_first
        assert missing == ["head.fc1.bias", "head.fc1.weight", "head.fc2.bias", "head.fc2.weight"]
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    for p in model.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()


def test_teacher_is_a_frozen_copy_in_eval_mode():
    teacher = URDMU(tiny_model_cfg())
    model = PIVAD(tiny_model_cfg(), InductorConfig(latent_dim=8, cmi_depth=1, cmi_heads=2), LossConfig(), MODS)
    with pytest.raises(RuntimeError, match="set_teacher"):
        model.train()(batch()[0], modalities=batch()[1])
    model.set_teacher(teacher)
    assert bool(model.has_teacher)
    with torch.no_grad():
        teacher.embed.weight.add_(1.0)  # the caller's model is not the teacher
    assert not torch.equal(model.teacher.embed.weight, teacher.embed.weight)
    model.train()
    assert model.training and model.student.training and not model.teacher.training
    x = batch()[0]
    before = model.teacher.features(x)["late"].clone()
    _step(model, "second")
    assert torch.equal(model.teacher.features(x)["late"], before)
    with pytest.raises(ValueError, match="widths"):
        model.set_teacher(URDMU(URDMUConfig(input_dim=16, hidden_dim=12, heads=2, dim_head=4, mlp_dim=8)))


def test_train_output_and_aux_terms():
    model = tiny_pivad("both")
    out, loss, parts = _step(model, "second")
    assert isinstance(out, PIVADOutput) and out.student.scores.shape == (4, 12)
    for key in ("pmg", "align", "distill", "early/pmg", "late/align", "late/distill", "mil"):
        assert key in parts and parts[key] == parts[key]  # present and not NaN
    assert parts["pmg"] == pytest.approx(parts["early/pmg"] + parts["late/pmg"], rel=1e-5)
    model = tiny_pivad("early")
    out, _, parts = _step(model, "first")
    assert out.student is None and set(parts) >= {"pmg", "align", "distill"}
    out, _, _ = _step(tiny_pivad("early", use_distill=False, use_align=False), "second")
    assert set(inductor_terms(out, LossConfig(use_distill=False, use_align=False))) == {"pmg", "early/pmg"}


def test_distill_and_pmg_terms_are_wired_to_the_right_features():
    """Recompute the early PI's terms by hand (no dropout): teacher's early feature, real modalities."""
    import torch.nn.functional as F

    ind = InductorConfig(position="early", latent_dim=8, cmi_depth=1, cmi_heads=2, cmi_dropout=0.0)
    model = PIVAD(tiny_model_cfg(), ind, LossConfig(), MODS)
    teacher = URDMU(tiny_model_cfg())
    model.set_teacher(teacher)
    x, mods, _ = batch()
    out = model.train()(x, modalities=mods, phase="first")
    with torch.no_grad():
        f = model.student.embed_features(x)
        res = model.inductors["early"](f)
        want_distill = F.mse_loss(res.out, teacher.eval().features(x)["early"])
        want_pmg = sum(F.mse_loss(res.pseudo[m.name], mods[m.name]) for m in MODS)
    aux = inductor_terms(out, model.loss_cfg)
    assert torch.allclose(aux["distill"], want_distill, atol=1e-6)
    assert torch.allclose(aux["pmg"], want_pmg, atol=1e-6)


def test_inference_view_matches_the_full_model_and_reloads_from_a_state_dict():
    torch.manual_seed(0)
    model = tiny_pivad("both")
    _step(model, "second")  # move away from the init
    model.eval()
    x = torch.randn(2, 5, 9, 16)
    full = model(x)
    view = model.student_only().eval()
    assert isinstance(view, PIVADInference)
    assert not any(name.startswith("teacher") for name in view.state_dict())
    assert torch.allclose(view(x), full, atol=1e-6)
    ind = InductorConfig(latent_dim=8, cmi_depth=2, cmi_heads=2, cmi_mlp_ratio=2.0)
    rebuilt = PIVADInference.from_config(tiny_model_cfg(), ind, MODS)
    rebuilt.load_state_dict({k: v for k, v in model.state_dict().items()
                             if not k.startswith("teacher.") and k != "has_teacher"})
    assert torch.allclose(rebuilt.eval()(x), full, atol=1e-6)
    # the PIs are on the path: the bare student scores differently
    assert not torch.allclose(model.student(x), full, atol=1e-4)


@pytest.mark.parametrize("T", [1, 17, 200])
@pytest.mark.parametrize("crops", [1, 5, 10])
def test_eval_shapes(T, crops):
    model = tiny_pivad("both").eval()
    scores = model(torch.randn(2, crops, T, 16))
    assert scores.shape == (2, T) and torch.isfinite(scores).all()
    assert model(torch.randn(3, T, 16)).shape == (3, T)


def test_single_snippet_training_has_no_nan():
    model = tiny_pivad("both")
    for phase in ("first", "second"):
        _, loss, parts = _step(model, phase, T=1)
        assert torch.isfinite(loss) and parts["align"] == 0.0
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_real_modality_source():
    torch.manual_seed(0)
    model = tiny_pivad("both", source="real")
    assert all(pi.pmg is None for pi in model.inductors.values())
    _, _, parts = _step(model, "second")
    assert parts["pmg"] == 0.0  # no PMG with real modalities
    assert _without_grad(model.inductors) == [] and _without_grad(model.student) == []
    model.eval()
    x = torch.randn(2, 3, 7, 16)
    mods = {m.name: torch.randn(2, 7, m.dim) for m in MODS}
    with pytest.raises(ValueError, match="modality"):
        model(x)
    scores = model(x, mods)  # per-video modalities shared by the crops
    per_crop = torch.stack([model(x[:, c], mods) for c in range(3)], dim=1).mean(1)
    assert scores.shape == (2, 7) and torch.allclose(scores, per_crop, atol=1e-6)
    with pytest.raises(ValueError, match="pose"):
        model(x, {"pose": mods["pose"][:, :5], "depth": mods["depth"]})


def test_modality_activations():
    model = tiny_pivad("both").train()
    acts = model.modality_activations(torch.randn(2, 5, 11, 16))
    assert set(acts) == {"pose", "depth"} and all(a.shape == (2, 11) for a in acts.values())
    assert model.training  # mode restored
    early = tiny_pivad("early").modality_activations(torch.randn(3, 11, 16))
    assert early["pose"].shape == (3, 11)


def test_bad_inputs():
    model = tiny_pivad("both").train()
    x, mods, _ = batch()
    with pytest.raises(ValueError, match="missing"):
        model(x, modalities={"pose": mods["pose"]})
    with pytest.raises(ValueError, match="phase"):
        model(x, modalities=mods, phase="third")
    with pytest.raises(ValueError, match="position"):
        PIVAD(tiny_model_cfg(), InductorConfig(position="middle"), LossConfig(), MODS)


def test_build_model():
    cfg = Config()
    cfg.model = tiny_model_cfg()
    cfg.inductor = InductorConfig(latent_dim=8, cmi_depth=1, cmi_heads=2)
    cfg.data.modalities = MODS
    assert type(build_model("urdmu", cfg)) is URDMU
    assert type(build_model("pivad", cfg)) is PIVAD
    with pytest.raises(ValueError, match="unknown model kind 'mil'"):  # rtfm is a backbone now
        build_model("mil", cfg)


# the extraction backbones' default widths: ViTPose-B 768 + 17 x (x, y, conf), Depth Anything V2 Small,
# SAM ViT-B neck, 4 x 4 x 8 flow-direction histogram, CLIP ViT-B/16 projection
UCF_WIDTHS = {"pose": 819, "depth": 384, "panoptic": 256, "flow": 128, "text": 512}


def _pi_params(D, L, widths, K, r):
    """The PI's parameters written out from the layer list (an independent path to the count)."""
    pmg = 3 * D * L + L + sum(L * L + L + 3 * L * d + d for d in widths.values())
    hidden = int(round(D * r))
    block = 2 * 2 * D + (3 * D * D + 3 * D) + (D * D + D) + (D * hidden + hidden) + (hidden * D + D)
    cmi = sum(d * D + D for d in widths.values()) + len(widths) * D * D + D + K * block
    return pmg + cmi


def test_default_size_is_near_paper_table5():
    """Default inductor + UCF modality widths: counted on the meta device (nothing runs)."""
    cfg = Config()
    cfg.data.modalities = [ModalityConfig(n, d) for n, d in UCF_WIDTHS.items()]
    with torch.device("meta"):
        model = build_model("pivad", cfg)
    view = sum(p.numel() for p in model.student_only().parameters())
    ind = cfg.inductor
    h = cfg.model.hidden_dim
    expected = 6_492_929 + sum(_pi_params(D, ind.latent_dim, UCF_WIDTHS, ind.cmi_depth, ind.cmi_mlp_ratio)
                               for D in (h, 2 * h))
    assert view == expected
    assert abs(view / 82.81e6 - 1) < 0.10


def test_default_macs_are_near_paper_table5():
    from pivad.models.size import size_report

    cfg = Config()
    cfg.data.modalities = [ModalityConfig(n, d) for n, d in UCF_WIDTHS.items()]
    total = size_report(cfg).pivad_total  # meta device: shapes only
    assert abs(total.macs / 19.88e9 - 1) < 0.10


def test_pmg_input_rgb_trains_and_scores_from_rgb():
    torch.manual_seed(0)
    ind = InductorConfig(position="both", latent_dim=8, cmi_depth=1, cmi_heads=2, pmg_input="rgb")
    model = PIVAD(tiny_model_cfg(), ind, LossConfig(), MODS)
    model.set_teacher(URDMU(tiny_model_cfg()))
    assert all(pi.pmg.encoder.conv.in_channels == 16 for pi in model.inductors.values())
    for phase in ("first", "second"):
        _, loss, _ = _step(model, phase)
        assert torch.isfinite(loss)
        assert _without_grad(model.inductors) == []
    model.eval()
    x = torch.randn(2, 3, 9, 16)  # crops: PMG must see each crop's own RGB rows
    full = model(x)
    per_crop = torch.stack([model(x[:, c]) for c in range(3)], 1).mean(1)
    assert torch.allclose(full, per_crop, atol=1e-6)
    assert torch.allclose(model.student_only().eval()(x), full, atol=1e-6)
    assert set(model.modality_activations(x)) == {"pose", "depth"}
