"""``pivad study``: seeds and variants, the summary by hand, the committed issue-9 results re-rendered,
bad input, and tiny real studies (two lanes; interrupted and resumed; on a config's own features)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from pivad.cli import main
from pivad.engine.study import Variant, parse_seeds, parse_variant
from pivad.engine.study_summary import render_markdown, summarise
from pivad.errors import ConfigError
from pivad.io import json_safe

from test_bad_input import _one_line
from test_resume import TINY, tiny_config

ROOT = Path(__file__).resolve().parents[1]
ISSUE9 = ROOT / "benchmarks" / "results" / "issue9"
SUMMARIES = ("main", "table3", "table3_pos", "screening_d0", "screening_demo_d0", "screening_fix_d0", "lambda_distill")
# a study's runs: 4 teacher steps, 2 + 4 π-VAD steps, validation every 2 steps
STEPS = {"teacher_steps": 4, "warmup_steps": 2, "steps": 4, "eval_every": 2, "log_every": 2}


# ------------------------------------------------------------------------------------------ parsing


def test_seed_ranges_and_lists():
    assert parse_seeds("1-5") == [1, 2, 3, 4, 5]
    assert parse_seeds("0,2, 7-8") == [0, 2, 7, 8]
    assert parse_seeds("3") == [3]
    for bad in ("5-1", "a", "1,,2", "-1", "1-2-3", "1,1", "2,1-3"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_variant_syntax():
    assert parse_variant("base") == Variant("base")
    assert parse_variant("late:inductor.position=late,loss.lambda_distill=0.5") == Variant(
        "late", ("--inductor.position", "late", "--loss.lambda_distill", "0.5"))
    for bad in ("late:", "late:position=late", "late:inductor.position", ":x.y=1", "a/b:x.y=1", "l:x.y=1,,"):
        with pytest.raises(ConfigError, match="--variant"):
            parse_variant(bad)


# ----------------------------------------------------------------------------------- the summary


def _row(variant: str, ds: int, ts: int, teacher: float, pivad: float) -> dict:
    def m(auc: float) -> dict:
        return {"auc": auc / 100, "auc_a": auc / 100, "ap": auc / 200, "ap_a": auc / 200, "video_auc": auc / 100}

    return {"variant": variant, "data_seed": ds, "train_seed": ts, "teacher": m(teacher), "pivad": m(pivad),
            "pivad_last": m(pivad - 1), "seconds": 1.0}


def test_summary_of_known_differences_by_hand():
    # differences 2, 3, -1, 4: mean 2, sample std sqrt(14/3), t(0.975, 3) = 3.182446; teacher std sqrt(125/3),
    # π-VAD (62, 73, 64, 59) std sqrt(109/3)
    teacher = [60.0, 70.0, 65.0, 55.0]
    rows = [_row("v", ds, ts, t, t + d) for (ds, ts), t, d in zip([(0, 1), (0, 2), (1, 1), (1, 2)], teacher,
                                                                  [2.0, 3.0, -1.0, 4.0])]
    s = summarise(rows, ["v"], [0, 1])
    d = s["by_variant"]["v"]["metrics"]["auc"]["delta"]
    half = 3.182446305284263 * math.sqrt(14 / 3) / 2
    assert d["mean"] == pytest.approx(2.0) and d["t_low"] == pytest.approx(2 - half) and d["wins"] == 3
    per_seed = s["by_variant"]["v"]["delta_auc_by_data_seed"]
    assert per_seed[0]["mean"] == pytest.approx(2.5) and per_seed[1]["mean"] == pytest.approx(1.5)
    assert s["by_variant"]["v"]["by_data_seed"][1]["ap"]["delta"]["mean"] == pytest.approx(0.75)  # AP: AUC / 2
    s.update(variants={"v": "--x.y 1"}, preset="demo", config="c.yaml")
    row = render_markdown(s).splitlines()[4]
    assert row == ("| v | 4 | 62.50 ± 6.45 | 64.50 ± 6.03 | +2.00 [-1.44, +5.44] | +1.00 [-2.44, +4.44] | 3/4 | "
                   "+2.00 [-1.44, +5.44] | +2.00 [-1.44, +5.44] | +2.5 / +1.5 |")


def _no_constant(name: str):
    raise AssertionError(f"bare {name} in a JSON file")


@pytest.mark.parametrize("name", [*SUMMARIES, "../issue20/study_f2/main", "../issue20/study_f2/screen",
                                  "../issue18/backbones", "../issue18/study_pel4vad/main", "../issue18/study_rtfm/main"])
def test_committed_issue9_summaries_are_reproduced(tmp_path, capsys, name):
    """The summaries committed by benchmarks/seeded_study.py (issue 9) and by `pivad study` (issue 20,
    family 2; issue 18, the backbones), re-rendered from their rows by the verb: the same markdown,
    byte for byte, and the same numbers in the JSON (plus the HTML page)."""
    src = (ISSUE9 / name).parent.resolve()
    name = Path(name).name
    shutil.copy(src / f"{name}.json", tmp_path)
    assert main(["study", "--report-only", "--out", str(tmp_path), "--name", name]) == 0
    assert (tmp_path / f"{name}.md").read_text() == (src / f"{name}.md").read_text()
    assert capsys.readouterr().out.strip() == (src / f"{name}.md").read_text().strip()
    new = json.loads((tmp_path / f"{name}.json").read_text(), parse_constant=_no_constant)  # strict JSON
    old = json_safe(json.loads((src / f"{name}.json").read_text()))  # earlier files held bare NaN: as null
    assert new["rows"] == old["rows"]
    for variant, entry in old["by_variant"].items():
        for metric, stats in entry["metrics"].items():
            got = new["by_variant"][variant]["metrics"][metric]
            assert got["teacher"] == pytest.approx(stats["teacher"])
            for key in ("delta", "delta_last"):
                assert got[key] == pytest.approx(stats[key], nan_ok=True)
    assert (tmp_path / f"{name}.html").stat().st_size > 5000


def test_docs_tables_are_the_committed_ones():
    """docs/study.md and the README quote the main tables as the study wrote them."""
    docs, readme = (ROOT / "docs" / "study.md").read_text(), (ROOT / "README.md").read_text()
    for name in ("main", "table3", "screening_fix_d0"):
        table = [line for line in (ISSUE9 / f"{name}.md").read_text().splitlines() if line.startswith("| ")]
        assert all(line in docs for line in table), name
    assert all(line in readme for line in (ISSUE9 / "main.md").read_text().splitlines() if line.startswith("| "))
    family2 = ROOT / "benchmarks" / "results" / "issue20" / "study_f2"
    assert all(line in docs and line in readme for line in (family2 / "main.md").read_text().splitlines()
               if line.startswith("| "))
    assert all(line in docs for line in (family2 / "screen.md").read_text().splitlines() if line.startswith("| "))
    backbones = (ROOT / "docs" / "backbones.md").read_text()
    for name, label in (("pel4vad", "PEL4VAD"), ("rtfm", "RTFM")):  # the README's table names the backbone
        rows = [line for line in (ISSUE9.parent / "issue18" / f"study_{name}" / "main.md").read_text().splitlines()
                if line.startswith("| ") and not line.startswith("| variant")]
        assert rows and all(line in docs and line in backbones for line in rows), name
        assert all(line.replace("| ", f"| {label}, ", 1) in readme for line in rows), name


# -------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory) -> Path:
    """The tiny model and schedule as a config file (the data section comes from the synthetic preset)."""
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    values = {k: dict(v) for k, v in TINY.items()}
    values["train"].update(STEPS)
    values["train"]["selection"] = "val"
    values["data"] = {"name": "demo", "num_segments": 16, "batch_normal": 2, "batch_abnormal": 2, "val_fraction": 0.2}
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("args, parts", [
    (["--seeds", "5-1"], ["--seeds '5-1'"]),
    (["--data-seeds", "x"], ["--data-seeds 'x'"]),
    (["--variant", "late:position=late"], ["--variant 'late:position=late'"]),
    (["--variant", "a", "--variant", "a"], ["--variant a: given twice"]),
    (["--variant", "a:inductor.nope=1"], ["--variant a", "inductor.nope"]),
    (["--lanes", "0"], ["--lanes 0"]),
    (["--preset", "huge"], ["--preset 'huge'"]),
    (["--name", "../x"], ["--name '../x'"]),
    (["--model.backbone", "foo"], ["pivad: error: config key 'model.backbone'", "got 'foo'"]),  # not a variant's
])
def test_bad_study_arguments_are_one_line(tmp_path, capsys, tiny_yaml, args, parts):
    assert main(["study", "-c", str(tiny_yaml), "--preset", "tiny", "--out", str(tmp_path / "s"),
                 "--data-seeds", "0", *args]) == 2
    _one_line(capsys, *parts)
    assert not (tmp_path / "s" / "runs").exists()


def test_folder_of_another_config_is_refused(tmp_path, capsys, tiny_yaml):
    out = tmp_path / "s"
    out.mkdir()
    (out / "study_setup.json").write_text(json.dumps({"config": "configs/demo.yaml", "preset": "demo",
                                                      "fingerprint": "0123456789ab", "variants": {}}))
    for extra in ([], ["--report-only"]):
        assert main(["study", "-c", str(tiny_yaml), "--preset", "tiny", "--out", str(out), *extra]) == 2
        _one_line(capsys, "study_setup.json", "another config", "configs/demo.yaml")
    assert not (out / "data").exists()


def test_report_only_of_an_empty_folder_and_of_another_config(tmp_path, capsys):
    assert main(["study", "--report-only", "--out", str(tmp_path)]) == 2
    _one_line(capsys, str(tmp_path), "no study here")
    shutil.copy(ISSUE9 / "main.json", tmp_path)
    assert main(["study", "--report-only", "--out", str(tmp_path), "--name", "main", "-c",
                 str(ROOT / "configs" / "ucf_crime.yaml")]) == 2
    _one_line(capsys, "main.json", "another config")
    assert main(["study", "--report-only", "--out", str(tmp_path), "--name", "main", "--variant", "nope"]) == 2
    _one_line(capsys, "--variant nope", "main.json")
    assert main(["study", "--report-only", "--out", str(tmp_path), "--name", "main", "--variant",
                 "paper_pmg:train.steps=1"]) == 2
    _one_line(capsys, "--variant paper_pmg", "main.json", "other overrides")


def test_the_documented_report_command_selects_pairs(tmp_path, capsys):
    """docs/study.md's report-only line for the main table, and one data seed of it (a smaller table)."""
    p = ("inductor.pmg_input=feature,inductor.pmg_detach=false,inductor.pmg_standardize=false,train.pmg_lr=0,"
         "inductor.latent_dim=64")
    shutil.copy(ISSUE9 / "main.json", tmp_path)
    args = ["study", "--out", str(tmp_path), "--data-seeds", "0-2", "--seeds", "1-5", "--report-only", "--name",
            "main", "--variant", "demo", "--variant", f"paper_pmg:{p}", "--variant", f"paper_pmg_300:{p},train.steps=300"]
    assert main(args) == 0
    assert (tmp_path / "main.md").read_text() == (ISSUE9 / "main.md").read_text()
    assert main([*args[:3], "--data-seeds", "0", *args[5:]]) == 0
    summary = json.loads((tmp_path / "main.json").read_text())
    assert summary["data_seeds"] == [0] and {r["data_seed"] for r in summary["rows"]} == {0}
    assert summary["by_variant"]["demo"]["n"] == 5  # data seed 0 with training seeds 1-5
    assert "| demo | 5 | 62.46 ± 5.90 | 72.90 ± 8.14 | +10.44 [+4.16, +16.72] |" in capsys.readouterr().out


def test_real_features_vary_only_the_training_seed(tmp_path, capsys, tiny_dataset):
    from pivad.config import save_config

    cfg = tiny_config(tiny_dataset, data={"name": "tiny_real"}, train=STEPS)
    path = tmp_path / "real.yaml"
    save_config(cfg, path)
    assert main(["study", "-c", str(path), "--data-seeds", "0-1", "--out", str(tmp_path / "s")]) == 2
    _one_line(capsys, "--data-seeds", "real features")
    missing = tmp_path / "nope.list"
    assert main(["study", "-c", str(path), "--out", str(tmp_path / "s"), "--data.train_list", str(missing)]) == 2
    _one_line(capsys, str(missing))
    assert not (tmp_path / "s" / "runs").exists() and not (tmp_path / "s" / "study_setup.json").exists()
    assert main(["study", "-c", str(path), "--family", "2", "--out", str(tmp_path / "s")]) == 2
    _one_line(capsys, "--family", "real features")


def test_family_is_part_of_a_synthetic_study():
    """--family 2 reaches the spec, and a family-2 folder is another study than a family-1 one (while the
    family-1 fingerprint stays what earlier studies recorded)."""
    import argparse

    from pivad.commands.study import add_arguments, build_spec
    from pivad.engine.study import fingerprint

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def spec(*argv: str):
        args = parser.parse_args(["--out", "/tmp/unused_study", *argv])
        args.overrides = []
        return build_spec(args)

    one, two = spec(), spec("--family", "2")
    assert (one.family, two.family) == (1, 2) and one.synthetic and two.synthetic
    assert fingerprint(one) != fingerprint(two)
    assert fingerprint(one) == fingerprint(spec("--family", "1"))


# ------------------------------------------------------------------------------------ real studies


def _study(out: Path, tiny_yaml: Path, *extra: str, variant: str = "late:inductor.position=late") -> list[str]:
    return ["study", "-c", str(tiny_yaml), "--preset", "tiny", "--data-seeds", "0", "--seeds", "1-2",
            "--variant", variant, "--out", str(out), *extra]


def _numbers(summary: dict) -> dict:
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in summary["rows"]]
    return {"rows": rows, "by_variant": summary["by_variant"]}


@pytest.fixture(scope="module")
def two_lane_study(tmp_path_factory, tiny_yaml) -> Path:
    out = tmp_path_factory.mktemp("study")
    assert main(_study(out, tiny_yaml, "--lanes", "2")) == 0
    return out


def test_two_lane_study_end_to_end(two_lane_study):
    out = two_lane_study
    summary = json.loads((out / "study.json").read_text())
    assert [(r["variant"], r["data_seed"], r["train_seed"]) for r in summary["rows"]] == [("late", 0, 1), ("late", 0, 2)]
    assert summary["by_variant"]["late"]["n"] == 2 and summary["preset"] == "tiny"
    for pair in ("d0_s1", "d0_s2"):
        result = json.loads((out / "runs" / "late" / pair / "result.json").read_text())
        assert set(result) == {"best", "last", "seconds"} and 0 <= result["best"]["auc"] <= 1
    teachers = list((out / "teachers").glob("*/d0_s*/result.json"))
    assert len(teachers) == 2 and not list((out / "teachers").glob("*/*/last.pt"))  # teachers keep best.pt only
    md = (out / "study.md").read_text()
    assert md.startswith("seeded study, preset tiny") and "| late | 2 |" in md
    assert "<svg" in (out / "study.html").read_text()
    setup = json.loads((out / "study_setup.json").read_text())
    assert setup["variants"] == {"late": ["--inductor.position", "late"]} and setup["train_seeds"] == [1, 2]


def test_rerun_trains_nothing_and_report_only_reads_the_folder(two_lane_study, tiny_yaml, capsys, monkeypatch):
    from pivad.engine import trainer

    before = (two_lane_study / "study.json").read_text()
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert main(_study(two_lane_study, tiny_yaml, "--lanes", "1")) == 0
    assert "0 to run" in capsys.readouterr().err
    assert main(["study", "--report-only", "--out", str(two_lane_study)]) == 0  # config and variants from the folder
    assert _numbers(json.loads(before)) == _numbers(json.loads((two_lane_study / "study.json").read_text()))
    capsys.readouterr()
    assert main(_study(two_lane_study, tiny_yaml, variant="late:inductor.position=early")) == 2
    _one_line(capsys, "--variant late", "other overrides")


def test_interrupted_study_resumes_to_the_same_summary(tmp_path, tiny_yaml, two_lane_study, monkeypatch):
    """Stopped inside the second run (after the first finished), then started again: the finished run is
    not trained again, the stopped one continues from its last.pt, and the summary is the two-lane study's."""
    from pivad.engine import trainer

    real_train = trainer.train
    calls: list[tuple[str, bool]] = []

    def stopping(cfg, run_dir, *, resume=False, stop_after=None, progress=True):
        calls.append((Path(run_dir).relative_to(tmp_path).as_posix(), resume))
        return real_train(cfg, run_dir, resume=resume, stop_after=3 if len(calls) == 2 else None, progress=progress)

    monkeypatch.setattr(trainer, "train", stopping)
    assert main(_study(tmp_path, tiny_yaml, "--lanes", "1")) == 130  # "interrupted"
    first, second = calls[0][0], calls[1][0]
    assert first.startswith("teachers/") and second == "runs/late/d0_s1"
    assert (tmp_path / first / "result.json").is_file() and (tmp_path / second / "last.pt").is_file()
    assert not (tmp_path / second / "result.json").exists() and not (tmp_path / "study.json").exists()
    stamp = (tmp_path / first / "result.json").stat().st_mtime_ns

    calls.clear()
    def recording(cfg, run_dir, **kwargs):
        calls.append((Path(run_dir).relative_to(tmp_path).as_posix(), kwargs["resume"]))
        return real_train(cfg, run_dir, **kwargs)

    monkeypatch.setattr(trainer, "train", recording)
    assert main(_study(tmp_path, tiny_yaml, "--lanes", "1")) == 0
    assert calls[0] == (second, True) and all(c[0] != first for c in calls) and len(calls) == 3
    assert (tmp_path / first / "result.json").stat().st_mtime_ns == stamp
    resumed = json.loads((tmp_path / "study.json").read_text())
    assert _numbers(resumed) == _numbers(json.loads((two_lane_study / "study.json").read_text()))


def test_study_on_a_configs_own_features(tmp_path, tiny_dataset, capsys):
    from pivad.config import save_config

    cfg = tiny_config(tiny_dataset, data={"name": "tiny_real"}, train=STEPS)
    path = tmp_path / "real.yaml"
    save_config(cfg, path)
    assert main(["study", "-c", str(path), "--seeds", "4", "--lanes", "1", "--out", str(tmp_path / "s")]) == 0
    summary = json.loads((tmp_path / "s" / "study.json").read_text())
    assert [(r["variant"], r["data_seed"], r["train_seed"]) for r in summary["rows"]] == [("base", None, 4)]
    assert summary["preset"] is None and summary["dataset"] == "tiny_real" and summary["data_seeds"] == []
    assert (tmp_path / "s" / "runs" / "base" / "s4" / "result.json").is_file()
    assert not (tmp_path / "s" / "data").exists()
    md = (tmp_path / "s" / "study.md").read_text()
    assert md.startswith("seeded study, data tiny_real") and "per data seed" not in md


def test_help_lists_the_verb(capsys):
    for argv in (["--help"], ["study", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    assert "--report-only" in capsys.readouterr().out


def test_study_of_another_backbone_trains_that_backbones_teacher(tmp_path, tiny_yaml, capsys):
    """--model.backbone pel4vad: the teacher is PEL4VAD trained alone, π-VAD distils from it."""
    from pivad.engine.checkpoint import load_checkpoint

    pel = ["--model.backbone", "pel4vad", "--pel4vad.hidden_dim", "8", "--pel4vad.out_dim", "8",
           "--pel4vad.window", "3", "--pel4vad.causal_steps", "3"]
    assert main(_study(tmp_path, tiny_yaml, "--seeds", "1", "--lanes", "1", *pel, variant="base")) == 0
    teacher = next((tmp_path / "teachers").glob("*/d0_s1"))
    assert load_checkpoint(teacher / "best.pt")["kind"] == "pel4vad"
    student = load_checkpoint(tmp_path / "runs" / "base" / "d0_s1" / "best.pt")
    assert student["kind"] == "pivad" and student["config"]["model"]["backbone"] == "pel4vad"
    out = capsys.readouterr().out
    assert "| base | 1 |" in out and f"config {tiny_yaml} --model.backbone pel4vad --pel4vad.hidden_dim 8" in out


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (state, parent, ...); [] once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (Linux /proc)."""
    return {int(d.name) for d in Path("/proc").glob("[0-9]*") if _stat(d.name)[1:2] == [str(pid)]}


def _running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    return _stat(pid)[:1] not in ([], ["Z"])


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads worker processes from Linux /proc")
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_to_the_study_alone_checkpoints_every_lane_and_leaves(tmp_path, tiny_yaml, sig):
    """The signal reaches only the study process (``kill``, a scheduler): it asks both lanes' runs to
    stop at the end of their step, they save ``last.pt`` and exit, and the study exits 130 at once
    instead of waiting for the runs to finish."""
    import os
    import signal
    import subprocess
    import sys
    import time

    values = yaml.safe_load(tiny_yaml.read_text())
    values["train"]["teacher_steps"] = 10**6  # runs that would last for hours
    cfg = tmp_path / "long.yaml"
    cfg.write_text(yaml.safe_dump(values))
    out = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "pivad.cli", *_study(out, cfg, "--lanes", "2")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while len(list(out.glob("teachers/*/d0_s*/log.jsonl"))) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the two teacher runs did not start"
            time.sleep(0.2)
        workers = _children(proc.pid)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopping 2 runs at the end of the current step" in err and err.rstrip().endswith("pivad: interrupted")
    teachers = sorted(out.glob("teachers/*/d0_s*"))
    assert [t.name for t in teachers] == ["d0_s1", "d0_s2"]
    assert all((t / "last.pt").is_file() and not (t / "result.json").exists() for t in teachers)
    assert workers
    deadline = time.monotonic() + 30  # the workers leave when the study has gone (exited or reaped)
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, f"worker processes left behind: {workers}"
        time.sleep(0.2)
