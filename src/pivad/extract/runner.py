"""A per-video job runner for feature extraction (``pivad extract rgb`` and ``pivad extract modalities``).

One job = one video and the files it must produce. The runner

* skips a job whose outputs all exist already (resume after an interruption; workers write every
  output atomically, so a file that exists is complete),
* hands the other jobs to an executor (:class:`LocalExecutor`: one after another in this process;
  ``pivad.extract.ray_executor`` adds a Ray one) and shows progress per video and overall,
* reports a job that fails (bad video, decoder error) and goes on with the next, but stops the run
  when the disk refuses a write (full, over quota, read-only: every later video would fail alike),
* returns a :class:`RunSummary`; :meth:`RunSummary.exit_code` is 1 if any job failed.

A worker is any picklable callable ``worker(job, report) -> dict`` that writes ``job.outputs``
atomically, raises (preferably :class:`~pivad.errors.PivadError`) on bad input and calls
``report(done, total)`` as it goes (units of its choice, e.g. snippets). The dict it returns (e.g.
``{"snippets": 42}``) is kept in the job's result.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from pivad.errors import DiskError, PivadError
from pivad.io import disk_problem

Report = Callable[[int, "int | None"], None]  # report(done, total)


@dataclass(frozen=True)
class VideoJob:
    """One video to process: its output name, its source file and the files that mark it done."""

    name: str
    source: Path
    outputs: tuple[Path, ...]

    def is_done(self) -> bool:
        return bool(self.outputs) and all(p.is_file() for p in self.outputs)


@dataclass
class JobResult:
    job: VideoJob
    status: str  # "done" | "skipped" | "failed"
    error: str | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class Worker(Protocol):
    def __call__(self, job: VideoJob, report: Report) -> dict[str, Any]: ...


class Executor(Protocol):
    """Runs jobs and calls ``on_result`` once per job (in any order), in the caller's process."""

    def run(self, worker: Worker, jobs: Sequence[VideoJob], on_result: Callable[[JobResult], None]) -> None: ...


def execute_job(worker: Worker, job: VideoJob, report: Report | None = None) -> JobResult:
    """Run one job and turn any failure into a ``failed`` result (executors call this, locally or remotely)."""
    start = time.perf_counter()
    try:
        info = worker(job, report or (lambda done, total: None)) or {}
    except DiskError:
        raise
    except PivadError as exc:
        return JobResult(job, "failed", str(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the batch
        if (problem := disk_problem(exc)) is not None:
            where = exc.filename or (job.outputs[0].parent if job.outputs else job.source)
            raise DiskError(f"{where}: {problem}") from None
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = " ".join(str(exc).split())[:200]
        error = f"{job.source}: {type(exc).__name__}: {message} (at {Path(where.filename).name}:{where.lineno})"
        return JobResult(job, "failed", error, time.perf_counter() - start)
    return JobResult(job, "done", None, time.perf_counter() - start, dict(info))


class LocalExecutor:
    """One job after another in this process, with a progress bar for the video being processed."""

    def __init__(self, progress: bool = True):
        self.progress = progress

    def run(self, worker: Worker, jobs: Sequence[VideoJob], on_result: Callable[[JobResult], None]) -> None:
        for job in jobs:
            bar = _VideoBar(job.name, enabled=self.progress)
            try:
                result = execute_job(worker, job, bar.report)
            finally:
                bar.close()
            on_result(result)


class _VideoBar:
    """A tqdm bar for one video, created on the first report (so it knows its total)."""

    def __init__(self, name: str, enabled: bool):
        self.name, self.enabled, self.bar = name, enabled, None

    def report(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.name[:40], unit="snip", position=1, leave=False, file=sys.stderr)
        if total is not None and total != self.bar.total and done <= total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class RunSummary:
    results: list[JobResult]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def text(self, what: str = "videos") -> str:
        """A short multi-line summary: counts, then one line per failed video."""
        lines = [
            f"{len(self.results)} {what}: {self.count('done')} done, {self.count('skipped')} skipped "
            f"(outputs already present), {self.count('failed')} failed"
        ]
        lines += [f"  FAILED {r.error}" for r in self.failed]
        return "\n".join(lines)


def check_unique_names(jobs: Iterable[VideoJob]) -> None:
    """Two videos writing the same outputs would overwrite each other: refuse before starting."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        for out in job.outputs:
            if out in seen and seen[out] != job.source:
                raise PivadError(f"{job.source}: writes {out.name} like {seen[out]} (same video name); rename one")
            seen[out] = job.source


def run_jobs(
    jobs: Sequence[VideoJob],
    worker: Worker,
    *,
    executor: Executor | None = None,
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "videos",
) -> RunSummary:
    """Run ``worker`` over ``jobs``: skip finished ones (unless ``overwrite``), report and skip failures."""
    check_unique_names(jobs)
    executor = executor or LocalExecutor(progress=progress)
    results: dict[int, JobResult] = {}
    todo: list[VideoJob] = []
    for i, job in enumerate(jobs):
        if not overwrite and job.is_done():
            results[i] = JobResult(job, "skipped")
        else:
            todo.append(job)
    index = {id(job): i for i, job in enumerate(jobs)}

    from tqdm import tqdm

    bar = tqdm(total=len(jobs), initial=len(results), desc=desc, unit="video", position=0, file=sys.stderr,
               disable=not progress)  # fmt: skip

    def on_result(result: JobResult) -> None:
        i = index.get(id(result.job))
        results[_find(jobs, result.job) if i is None else i] = result
        if result.status == "failed":
            bar.write(f"pivad: failed: {result.error}", file=sys.stderr)
        bar.update(1)

    try:
        executor.run(worker, todo, on_result)
    finally:
        bar.close()
    return RunSummary([results[i] for i in sorted(results)])


def _find(jobs: Sequence[VideoJob], job: VideoJob) -> int:
    """Index of a job that came back as a copy (e.g. from another process)."""
    for i, candidate in enumerate(jobs):
        if candidate == job:
            return i
    raise KeyError(job.name)
