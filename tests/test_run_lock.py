"""A run folder is locked while a process writes it (issue 21): a second ``pivad train`` (or ``evaluate``,
or an ablation cell) writing the same folder gets one line and exit 2 and changes nothing; the kernel
drops the lock of a killed process, so ``--resume`` after SIGKILL still works."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pivad.cli import main
from pivad.config import save_config
from pivad.engine.runs import LOCK_FILE, finish_run, run_lock
from pivad.errors import ConfigError

from test_bad_input import _one_line
from test_kill import _env, _pivad
from test_resume import tiny_config

HOLD = "import sys\nfrom pivad.engine.runs import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('locked', flush=True)\n    sys.stdin.read()\n"


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) with its content's digest."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _config(tiny_dataset: Path, tmp_path: Path, **train) -> Path:
    cfg = tiny_config(tiny_dataset, train={"teacher_steps": 4, "warmup_steps": 2, "steps": 2, "eval_every": 2,
                                           "out_dir": str(tmp_path / "results"), **train})
    path = tmp_path / "tiny.yaml"
    save_config(cfg, path)
    return path


class _Holder:
    """Another process holding ``folder``'s run lock until :meth:`release`."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=_env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout.readline() == "locked\n"

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0


def test_the_lock_is_reentrant_and_leaves_nothing_behind(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        assert (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with run_lock(run / "." ):  # the same folder, another spelling: this process holds it already
            pass
        assert (run / LOCK_FILE).is_file()
    assert not run.exists()  # made by the lock and left empty: removed again
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    with run_lock(run):
        pass
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_a_locked_run_folder_is_refused_and_left_as_it_was(run_dir, tmp_path, capsys):
    before = _snapshot(run_dir)
    holder = _Holder(run_dir)
    try:
        locked = f"{run_dir}: run folder in use by process {holder.proc.pid}"
        assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
        _one_line(capsys, locked)
        assert main(["train", "-c", str(run_dir / "config.yaml"), "--run-dir", str(run_dir), "--no-progress"]) == 2
        _one_line(capsys, locked)
        assert main(["evaluate", "--run", str(run_dir), "--no-progress", "--no-plots"]) == 2
        _one_line(capsys, locked)
        with pytest.raises(ConfigError, match="run folder in use"):
            run_lock(run_dir).__enter__()
        assert _snapshot(run_dir) == {**before, LOCK_FILE: _snapshot(run_dir)[LOCK_FILE]}
    finally:
        holder.release()
    assert _snapshot(run_dir) == before  # the holder's lock file went with it


def test_an_ablation_cell_being_written_is_refused(tiny_dataset, tmp_path):
    from pivad.engine.ablate import _train_and_evaluate

    cell = tmp_path / "cell" / "seed0"
    holder = _Holder(cell)
    try:
        with pytest.raises(ConfigError, match="run folder in use"):
            _train_and_evaluate(tiny_config(tiny_dataset), cell, progress=False)
        assert sorted(p.name for p in cell.iterdir()) == [LOCK_FILE]
    finally:
        holder.release()


def _wait_for(proc: subprocess.Popen, *paths: Path, holder: Path | None = None) -> None:
    """Until every path exists and ``holder`` names ``proc`` (or ``proc`` has ended)."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        pid_written = holder is None or (holder.is_file() and holder.read_text().strip() == str(proc.pid))
        if all(p.exists() for p in paths) and pid_written:
            return
        time.sleep(0.01)


@pytest.mark.slow
def test_two_concurrent_trains_into_one_folder(tiny_dataset, tmp_path, capsys):
    from pivad.engine.checkpoint import load_checkpoint

    path, run = _config(tiny_dataset, tmp_path), tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "pivad.cli", "train", "-c", str(path), "--run-dir", str(run),
                              "--no-progress", "--no-eval"], env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(first, run / "config.yaml", holder=run / LOCK_FILE)
        assert first.poll() is None, "the first run ended before it was seen holding its lock"
        first.send_signal(signal.SIGSTOP)  # mid-run, lock held: the second writer comes now
        before = _snapshot(run)
        assert main(["train", "-c", str(path), "--run-dir", str(run), "--no-progress", "--no-eval"]) == 2
        _one_line(capsys, f"{run}: run folder in use by process {first.pid}")
        assert main(["train", "--resume", str(run), "--no-progress", "--no-eval"]) == 2
        _one_line(capsys, f"{run}: run folder in use by process {first.pid}")
        assert _snapshot(run) == before
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert load_checkpoint(run / "last.pt")["global_step"] == 8
    assert not (run / LOCK_FILE).exists()


@pytest.mark.slow
def test_resume_after_sigkill_takes_the_lock_again(tiny_dataset, tmp_path):
    path = _config(tiny_dataset, tmp_path)
    run = tmp_path / "results" / "pivad" / "demo" / "v0"
    proc = subprocess.Popen([sys.executable, "-m", "pivad.cli", "train", "-c", str(path), "--no-progress",
                             "--no-eval"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(proc, run / "last.pt", holder=run / LOCK_FILE)
        assert proc.poll() is None, "the run ended before its first checkpoint was seen"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert (run / LOCK_FILE).read_text().strip() == str(proc.pid)  # left behind, but no longer held
    again = _pivad("train", "--resume", str(run), "--no-progress", "--no-eval")
    assert again.returncode == 0, again.stderr
    assert "resuming from global step" in again.stderr
    from pivad.engine.checkpoint import load_checkpoint

    assert load_checkpoint(run / "last.pt")["global_step"] == 8
    assert not (run / LOCK_FILE).exists()


def test_finish_run_removes_a_failed_run_with_its_lock_file(tmp_path):
    run = tmp_path / "v0"
    with run_lock(run):
        (run / "config.yaml").write_text("{}\n")
        finish_run(run, created=True)
    assert not run.exists()
