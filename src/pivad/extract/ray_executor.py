"""A Ray executor for :func:`pivad.extract.runner.run_jobs`: videos spread over a Ray cluster.

Workers are Ray actors, each holding one copy of the (picklable) per-video worker, so model weights
are loaded once per actor, not once per video; every video is one actor call (one task), dispatched
as soon as an actor is free. Results come back to the caller's process, which updates the progress
bar and the summary; outputs are written by the actors (atomic writes, so a shared filesystem is
needed when the cluster spans machines). Outputs are the same files a local run writes.

Used by ``pivad extract modalities --ray auto|ADDRESS|local`` and, through the same runner, by any
extraction worker (``pivad extract rgb``'s :class:`~pivad.extract.rgb.RGBExtractor` included).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

from pivad.errors import PivadError
from pivad.errors import DiskError
from pivad.extract.runner import JobResult, VideoJob, Worker, execute_job


class _Actor:
    """Holds one worker; ``run(job)`` processes one video in the actor's process."""

    def __init__(self, worker: Worker, threads: int, numerics: dict[str, bool]):
        import torch

        torch.set_num_threads(threads)  # the actor's CPU share (Ray's default would be 1 thread)
        # the caller's numeric settings (e.g. no TF32 convolutions), so GPU results match a local run
        torch.backends.cudnn.allow_tf32 = numerics["cudnn_tf32"]
        torch.backends.cuda.matmul.allow_tf32 = numerics["matmul_tf32"]
        self.worker = worker

    def run(self, job: VideoJob) -> JobResult:
        try:
            return execute_job(self.worker, job)
        except DiskError as exc:  # handed back plainly (not as a RayTaskError): the caller stops the run
            return JobResult(job, "disk", str(exc))


class RayExecutor:
    """Run jobs on Ray actors.

    address: ``None`` = use the Ray instance this process already initialised (or start a local one),
    ``"local"`` = start a local instance, ``"auto"`` or ``"ray://host:port"``/``"host:port"`` = connect.
    num_cpus / num_gpus: resources per actor (``num_gpus=0.5`` puts two actors on one GPU).
    num_workers: actors to start (default: as many as the cluster's resources fit, at most one per job).
    threads: torch threads per actor (default: its CPU share, at least 1). Features equal a local run's
    bit for bit when both use the same number of threads; other thread counts may change the order
    of floating-point sums in convolutions (differences around 1e-6).
    """

    def __init__(self, address: str | None = None, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 num_workers: int | None = None, threads: int | None = None, init_kwargs: dict[str, Any] | None = None):
        self.address, self.num_cpus, self.num_gpus = address, float(num_cpus), float(num_gpus)
        self.threads = max(1, int(threads if threads is not None else num_cpus))
        self.num_workers = num_workers
        self.init_kwargs = dict(init_kwargs or {})

    def _ray(self) -> Any:
        try:
            import ray
        except ModuleNotFoundError:
            raise PivadError("--ray needs the 'ray' package: pip install 'pivad[ray]'") from None
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            kwargs = {"include_dashboard": False, "log_to_driver": True, **self.init_kwargs}
            address = None if self.address in (None, "local") else self.address
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise PivadError(f"--ray {self.address}: cannot connect to a Ray cluster ({exc})") from None
        return ray

    def _pool_size(self, ray: Any, n_jobs: int) -> int:
        if self.num_workers:
            return max(1, min(self.num_workers, n_jobs))
        res = ray.cluster_resources()
        fits = []
        if self.num_cpus > 0:
            fits.append(int(res.get("CPU", 1) // self.num_cpus))
        if self.num_gpus > 0:
            fits.append(int(res.get("GPU", 0) // self.num_gpus))
        size = min(fits) if fits else 1
        if size < 1:
            raise PivadError(f"--ray: the cluster has no room for a worker with {self.num_cpus} CPU, "
                             f"{self.num_gpus} GPU (it has {res.get('CPU', 0)} CPU, {res.get('GPU', 0)} GPU)")
        return max(1, min(size, n_jobs))

    def run(self, worker: Worker, jobs: Sequence[VideoJob], on_result: Callable[[JobResult], None]) -> None:
        if not jobs:
            return
        ray = self._ray()
        actor_cls = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_Actor)
        import torch

        numerics = {"cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
                    "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
        worker_ref = ray.put(worker)
        actors = [actor_cls.remote(worker_ref, self.threads, numerics) for _ in range(self._pool_size(ray, len(jobs)))]
        pending: dict[Any, tuple[Any, VideoJob]] = {}
        queue = list(jobs)

        def submit(actor: Any) -> None:
            job = queue.pop(0)
            pending[actor.run.remote(job)] = (actor, job)

        for actor in actors:
            if queue:
                submit(actor)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                actor, job = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - an actor that died fails its video only
                    message = " ".join(str(exc).split())[:200]
                    result = JobResult(job, "failed", f"{job.source}: Ray worker failed ({type(exc).__name__}: {message})")
                    actor = actor_cls.remote(worker_ref, self.threads, numerics)  # replace a possibly dead actor
                    actors.append(actor)
                if result.status == "disk":  # a full disk fails every later video alike: stop, as locally
                    raise DiskError(result.error)
                on_result(result)
                if queue:
                    submit(actor)
        finally:
            for ref in pending:
                ray.cancel(ref)  # actor tasks take no force=True (a ValueError); the actors are killed next
            for actor in actors:
                ray.kill(actor)
        print(f"pivad: ray: {len(jobs)} videos on {len(actors)} workers", file=sys.stderr)
