"""An annotated event past the video's end (issue 21). The field's UCF file has events that end in the
last partial snippet its features drop (up to 16 frames past): those are clipped, as before. One that
ends further out is the wrong video or frame rate: one line naming the annotation line, the video and
the event, exit 2, in ``data gt``, ``evaluate`` and before ``train``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pivad.cli import main
from pivad.config import save_config
from test_bad_input import _one_line
from test_resume import tiny_config


def _shifted_annotation(tiny_dataset: Path, tmp_path: Path, past: int) -> tuple[Path, str, str]:
    """The tiny dataset's annotation with its first event's end moved ``past`` frames past the video's end."""
    lines = (tiny_dataset / "annotations.txt").read_text().splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.split()[3] != "-1")
    tokens = lines[k].split()
    n_frames = int(tokens[1])  # = 16 T for the synthetic data
    tokens[4] = str(n_frames - 1 + past)
    lines[k] = " ".join(tokens)
    path = tmp_path / "ann.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, f"{path}:{k + 1}", f"{tokens[3]}-{tokens[4]}"


def _gt_args(tiny_dataset: Path, annotation: Path, out: Path) -> list[str]:
    return ["data", "gt", "--list", str(tiny_dataset / "lists/test.list"), "--root", str(tiny_dataset),
            "--annotation", str(annotation), "--out", str(out)]


def test_event_within_one_snippet_past_the_end_is_clipped(tiny_dataset, tmp_path, capsys):
    annotation, _, _ = _shifted_annotation(tiny_dataset, tmp_path, 16)
    assert main(_gt_args(tiny_dataset, annotation, tmp_path / "gt.npy")) == 0
    assert "events past the feature length: 1" in capsys.readouterr().out
    gt, before = np.load(tmp_path / "gt.npy"), np.load(tiny_dataset / "gt.npy")
    assert gt.size == before.size and gt.sum() > before.sum()  # the event now runs to the video's last frame


def test_event_far_past_the_end_is_one_line_in_data_gt(tiny_dataset, tmp_path, capsys):
    annotation, where, event = _shifted_annotation(tiny_dataset, tmp_path, 17)
    out = tmp_path / "gt.npy"
    assert main(_gt_args(tiny_dataset, annotation, out)) == 2
    _one_line(capsys, f"{where}: video ", f"event {event} ends past the video's end")
    assert not out.exists()


def test_event_far_past_the_end_fails_evaluate_and_train_first(run_dir, tiny_dataset, tmp_path, capsys):
    annotation, where, event = _shifted_annotation(tiny_dataset, tmp_path, 500)
    assert main(["evaluate", "--run", str(run_dir), "--out", str(tmp_path / "e"), "--no-progress", "--no-plots",
                 "--data.annotation", str(annotation)]) == 2  # fmt: skip
    _one_line(capsys, where, f"event {event} ends past the video's end")
    cfg = tiny_config(tiny_dataset, data={"annotation": str(annotation)},
                      train={"out_dir": str(tmp_path / "results")})
    save_config(cfg, tmp_path / "cfg.yaml")
    assert main(["train", "-c", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 2
    _one_line(capsys, where, f"event {event}")
    assert not (tmp_path / "results").exists()  # refused before the run folder
