"""``pivad info`` and the size counting behind it (MACs checked against a hand count)."""

from __future__ import annotations

import yaml

from pivad.cli import main
from pivad.config import Config, InductorConfig, ModalityConfig, URDMUConfig
from pivad.models.size import size_report

WIDTHS = {"pose": 5, "depth": 3}
TINY = {
    "model": {"input_dim": 16, "hidden_dim": 8, "depth": 1, "heads": 2, "dim_head": 4, "mlp_dim": 8,
              "a_nums": 4, "n_nums": 4, "head_dim": 8},
    "inductor": {"latent_dim": 6, "cmi_depth": 2, "cmi_heads": 2, "cmi_mlp_ratio": 2.0},
    "data": {"modalities": [{"name": n, "dim": d} for n, d in WIDTHS.items()]},
}


def _tiny_cfg() -> Config:
    cfg = Config()
    cfg.model = URDMUConfig(**TINY["model"])
    cfg.inductor = InductorConfig(**TINY["inductor"])
    cfg.data.modalities = [ModalityConfig(n, d) for n, d in WIDTHS.items()]
    return cfg


def test_macs_match_a_hand_count():
    """The PIs' MACs by hand, layer by layer; the student's row is what UR-DMU runs (its own business)."""
    cfg = _tiny_cfg()
    T = 10
    rep = size_report(cfg, snippets=T)
    H = cfg.model.hidden_dim
    ind = cfg.inductor
    L, K, M = ind.latent_dim, ind.cmi_depth, len(WIDTHS)
    rows = {r.name.split(" (")[0]: r for r in rep.inference if r.level == 1}
    for pos, D in (("early PI", H), ("late PI", 2 * H)):
        hidden = int(D * ind.cmi_mlp_ratio)
        pmg = T * (3 * D * L + sum(L * L + 3 * L * d for d in WIDTHS.values()))  # encoder, views, decoders
        cmi = T * (sum(d * D for d in WIDTHS.values()) + M * D * D)  # projections, fusion
        blocks = K * (T * (4 * D * D + 2 * D * hidden)  # qkv, out, MLP
                      + 2 * T * T * D)  # QKᵀ and AV: the T² terms
        assert rows[pos].macs == pmg + cmi + blocks, pos
    # the PIs run inside the student's hooks: counted once, under their own rows
    student = rows["student UR-DMU"].macs
    assert 0 < student < rep.pivad_total.macs
    assert rep.pivad_total.macs == student + rows["early PI"].macs + rows["late PI"].macs
    assert rep.training_only[0].params == rep.urdmu.params  # the teacher, apart from the inference path
    # UR-DMU's official layer list at T=10 (input 16, H 8, 1 layer of 2 heads x 4, MLP 8, 4+4 slots, head 8):
    # embed 3·16·8·10 = 3840; qkvt 10·8·32 = 2560; QKᵀ+AV 2·100·8 = 1600; A2·t 100·8 = 800;
    # to_out 10·16·8 = 1280; MLP 2·10·8·8 = 1280; memories 2·10·8·8 = 1280; encoder_mu 2·10·64 = 1280;
    # head 10·(16·8 + 8) = 1360
    assert rep.urdmu.macs == student == 15280
    assert rep.training_only[0].macs == 15280 - 1360  # features(): no head
    assert rep.urdmu_executed_macs > 0  # what this implementation runs (reported beside)


def test_info_verb_prints_the_table(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert main(["info", "-c", str(path), "--snippets", "20"]) == 0
    out = capsys.readouterr().out
    for text in ("UR-DMU", "early PI (D=8)", "late PI (D=16)", "π-VAD inference total", "teacher UR-DMU",
                 "paper Table 5: UR-DMU 6.16 M / 1.54 G;  π-VAD 82.81 M / 19.88 G", "6,492,929", "MACs@T=20"):
        assert text in out, text
    assert main(["info", "-c", str(path), "--inductor.position", "none"]) == 0
    assert "π-VAD" not in capsys.readouterr().out.split("paper Table 5")[0]


def test_info_bad_input_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "inductor": {**TINY["inductor"], "cmi_heads": 3}}))
    assert main(["info", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pivad: error: {path}") and "divisible by 3 heads" in err and "\n" not in err
    assert main(["info", "-c", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["info", "--snippets", "0"]) == 2
    assert "--snippets" in capsys.readouterr().err


def test_pmg_on_rgb_and_detached_is_counted_on_the_eval_path():
    plain = size_report(_tiny_cfg())
    cfg = _tiny_cfg()
    cfg.inductor.pmg_input, cfg.inductor.pmg_detach = "rgb", True
    report = size_report(cfg)
    # PMG's encoder reads the 16-d input instead of F* (8-d early, 16-d late): 3·6·(16 − 8) more weights
    assert report.pivad_total.params == plain.pivad_total.params + 3 * 6 * (16 - 8)
    # detaching stops gradients only: every PI parameter is still reached at eval
    assert report.pivad_eval_params == plain.pivad_eval_params + 3 * 6 * (16 - 8)
