"""loss.distill_at (where L_distill pulls) and loss.distill_gate (stop pulling where the student already
beats the teacher on MIL): wiring, the gate's arithmetic, config checks and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pivad.config import ConfigError, from_dict
from pivad.losses.inductor import distill_gate, distill_loss, inductor_terms, pivad_loss
from tests.test_pivad import batch, tiny_pivad


def test_distill_at_late_pulls_only_the_late_pi():
    model = tiny_pivad(position="both", distill_at="late")
    x, mods, labels = batch()
    out = model.train()(x, modalities=mods, phase="second")
    assert out.distill_points == ("late",)
    assert out.traces["early"].teacher is None and out.traces["late"].teacher is not None
    aux = inductor_terms(out, model.loss_cfg)
    assert "late/distill" in aux and "early/distill" not in aux
    assert torch.equal(aux["distill"], aux["late/distill"])
    loss, _ = pivad_loss(out, labels, model.loss_cfg, "second")
    loss.backward()
    # the early PI's CMI still trains (MIL, L_align), only L_distill left it
    assert all(p.grad is not None for p in model.inductors["early"].parameters() if p.requires_grad)


def test_distill_at_all_is_every_pi():
    model = tiny_pivad(position="both")
    x, mods, _ = batch()
    out = model.train()(x, modalities=mods, phase="first")
    assert set(inductor_terms(out, model.loss_cfg)) >= {"early/distill", "late/distill"}


def test_distill_at_outside_the_inductor_positions_is_refused():
    with pytest.raises(ValueError, match="loss.distill_at"):
        tiny_pivad(position="early", distill_at="late")
    with pytest.raises(ConfigError, match="loss.distill_at"):
        from_dict({"inductor": {"position": "early"}, "loss": {"distill_at": "late"}})
    with pytest.raises(ConfigError, match="loss.distill_at"):
        from_dict({"loss": {"distill_at": "nowhere"}})
    assert from_dict({"loss": {"distill_at": "early+late"}}).loss.distill_at == "early+late"


def test_distill_gate_by_hand():
    T = 32  # k = T // 16 + 1 = 3
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    student = torch.full((4, T), 0.5)
    teacher = torch.full((4, T), 0.5)
    student[0] = 0.1  # normal video, student lower: it beats the teacher -> no pull
    teacher[1] = 0.1  # normal video, teacher lower -> pull
    student[2, :3] = 0.9  # abnormal, student's top-3 higher -> no pull
    teacher[3, :3] = 0.9  # abnormal, teacher's higher -> pull
    assert distill_gate(student, teacher, labels).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert distill_gate(teacher, teacher, labels).tolist() == [0.0] * 4  # a tie does not pull


def test_weighted_distill_loss():
    s, t = torch.randn(4, 6, 5), torch.randn(4, 6, 5)
    assert torch.allclose(distill_loss(s, t, torch.ones(4)), F.mse_loss(s, t), atol=1e-6)
    w = torch.tensor([1.0, 0.0, 1.0, 0.0])
    want = ((s - t) ** 2).mean(dim=(1, 2))[[0, 2]].sum() / 4
    assert torch.allclose(distill_loss(s, t, w), want, atol=1e-6)


def test_gated_step_two_uses_the_teachers_scores_and_logs_the_share():
    model = tiny_pivad(position="both", distill_gate="mil")
    x, mods, labels = batch(T=20)
    out = model.train()(x, modalities=mods, phase="second")
    with torch.no_grad():
        want_teacher = model.teacher(x)
        want_student = model.eval().student_only()(x)  # eval mode on both sides
    model.train()
    assert torch.equal(out.teacher_scores, want_teacher)
    assert torch.allclose(out.student_scores, want_student, atol=1e-6)
    assert model.student.training and all(m.training for m in model.inductors.modules())
    loss, parts = pivad_loss(out, labels, model.loss_cfg, "second")
    gate = distill_gate(out.student_scores, out.teacher_scores, labels)
    assert parts["distill_gate"] == pytest.approx(float(gate.mean()))
    ungated = inductor_terms(out, model.loss_cfg)["distill"]
    gated = inductor_terms(out, model.loss_cfg, gate)["distill"]
    assert gated.item() <= ungated.item() + 1e-7
    loss.backward()
    # step 1 is never gated: no teacher scores are computed there
    assert model.train()(x, modalities=mods, phase="first").teacher_scores is None


def test_gate_that_closes_everywhere_removes_the_distillation_gradient():
    model = tiny_pivad(position="early", distill_gate="mil", lambda_align=0.0, use_pmg=False)
    x, mods, labels = batch(T=20)
    out = model.train()(x, modalities=mods, phase="second")
    aux = inductor_terms(out, model.loss_cfg, torch.zeros(x.shape[0]))
    aux["distill"].backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())
