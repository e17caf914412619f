"""The per-video job runner: resume, failures reported and skipped, atomic outputs, pluggable executors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pivad.errors import PivadError
from pivad.extract.runner import JobResult, LocalExecutor, VideoJob, execute_job, run_jobs
from pivad.io import atomic_save_npy


class CountingWorker:
    """Writes each output as [n,2] of the video's number; fails on names starting with 'bad' or 'crash'."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, job: VideoJob, report) -> dict:
        self.calls.append(job.name)
        if job.name.startswith("bad"):
            raise PivadError(f"{job.source}: cannot open as a video")
        n = int(job.name[-1])
        for k, out in enumerate(job.outputs):
            if job.name.startswith("crash") and k == 1:
                raise RuntimeError("decoder died")  # after the first output was written
            report(k + 1, len(job.outputs))
            atomic_save_npy(out, np.full((n, 2), n, np.float32))
        return {"snippets": n}


def _jobs(tmp_path: Path, names: list[str]) -> list[VideoJob]:
    return [
        VideoJob(name, tmp_path / "videos" / f"{name}.mp4", (tmp_path / "out" / f"{name}__0.npy", tmp_path / "out" / f"{name}__1.npy"))
        for name in names
    ]


def test_failures_are_reported_and_the_batch_goes_on(tmp_path):
    jobs = _jobs(tmp_path, ["v1", "bad2", "crash3", "v4"])
    worker = CountingWorker()
    summary = run_jobs(jobs, worker, progress=False)
    assert [r.status for r in summary.results] == ["done", "failed", "failed", "done"]
    assert summary.exit_code() == 1
    assert summary.results[0].info == {"snippets": 1}
    assert summary.failed[0].error.endswith("bad2.mp4: cannot open as a video")
    crash = summary.failed[1].error
    assert "crash3.mp4: RuntimeError: decoder died" in crash and "\n" not in crash
    text = summary.text()
    assert text.splitlines()[0] == "4 videos: 2 done, 0 skipped (outputs already present), 2 failed"
    assert "FAILED" in text and "bad2.mp4" in text
    np.testing.assert_array_equal(np.load(jobs[3].outputs[1]), np.full((4, 2), 4, np.float32))
    # the crashed job left its first output only, and no temporary files
    assert jobs[2].outputs[0].exists() and not jobs[2].outputs[1].exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "crash3__0.npy", "v1__0.npy", "v1__1.npy", "v4__0.npy", "v4__1.npy",
    ]  # fmt: skip


def test_second_run_skips_finished_and_retries_the_rest(tmp_path):
    jobs = _jobs(tmp_path, ["v1", "crash3", "v4"])
    run_jobs(jobs, CountingWorker(), progress=False)
    again = CountingWorker()
    summary = run_jobs(jobs, again, progress=False)
    assert again.calls == ["crash3"]  # half-written job is redone, finished ones are not
    assert [r.status for r in summary.results] == ["skipped", "failed", "skipped"]
    forced = CountingWorker()
    run_jobs(jobs, forced, overwrite=True, progress=False)
    assert forced.calls == ["v1", "crash3", "v4"]


def test_all_done_is_exit_zero(tmp_path):
    summary = run_jobs(_jobs(tmp_path, ["v1", "v2"]), CountingWorker(), progress=True)
    assert summary.exit_code() == 0 and summary.count("done") == 2


class ReversedExecutor:
    """Another executor: runs the jobs last-first and returns copies (as a remote executor would)."""

    def run(self, worker, jobs, on_result):
        for job in reversed(list(jobs)):
            result = execute_job(worker, job)
            copy = VideoJob(job.name, Path(str(job.source)), tuple(job.outputs))
            on_result(JobResult(copy, result.status, result.error, result.seconds, result.info))


def test_pluggable_executor_keeps_input_order(tmp_path):
    jobs = _jobs(tmp_path, ["v1", "bad2", "v3"])
    worker = CountingWorker()
    summary = run_jobs(jobs, worker, executor=ReversedExecutor(), progress=False)
    assert worker.calls == ["v3", "bad2", "v1"]
    assert [(r.job.name, r.status) for r in summary.results] == [("v1", "done"), ("bad2", "failed"), ("v3", "done")]


def test_same_output_names_are_refused(tmp_path):
    a = VideoJob("clip", tmp_path / "a" / "clip.mp4", (tmp_path / "out" / "clip__0.npy",))
    b = VideoJob("clip", tmp_path / "b" / "clip.avi", (tmp_path / "out" / "clip__0.npy",))
    with pytest.raises(PivadError, match=r"clip.avi: writes clip__0.npy like .*clip.mp4"):
        run_jobs([a, b], CountingWorker(), progress=False)


def test_progress_per_video_and_overall(tmp_path, capsys):
    seen = []
    LocalExecutor(progress=True).run(CountingWorker(), _jobs(tmp_path, ["v2"]), seen.append)
    assert [(r.job.name, r.status) for r in seen] == [("v2", "done")]
    assert "v2" in capsys.readouterr().err  # the per-video bar, named after the video
    run_jobs(_jobs(tmp_path, ["v3", "bad1"]), CountingWorker(), progress=True, desc="extract rgb")
    err = capsys.readouterr().err
    assert "extract rgb" in err and "2/2" in err
    assert "pivad: failed: " in err and "skipped " not in err.split("videos:")[0] and "bad1.mp4: cannot open as a video" in err
