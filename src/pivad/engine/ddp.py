"""Data-parallel plumbing for ``torchrun``: process group, batch sharding, gradient averaging.

Launch: ``torchrun --nproc_per_node G [--nnodes N --node_rank R --master_addr A] -m pivad.cli train -c ...``
(or the ``pivad`` script path). Without torchrun's environment everything is a single process.

How data parallelism works here (plain and readable rather than wrapped in ``DistributedDataParallel``):
every rank builds the same seeded balanced loader, draws the same global batch of
``batch_normal + batch_abnormal`` crops and keeps its own slice ``[rank::world]`` of each half (the
``DistributedSampler`` rule), so the global batch and the loader state are the same as in one process
and a checkpoint's loader state serves every rank. After ``backward`` the gradients are averaged over
ranks in one flat all-reduce, so all ranks apply the same update and their weights stay identical;
BatchNorm layers (RTFM) normalise each rank's shard and their running statistics are averaged over
ranks after each step, so the buffers stay identical too.
Only rank 0 evaluates and writes files. CUDA uses NCCL, CPU uses gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (no-op without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shard_batch(batch, info: DistInfo, n_normal: int):
    """This rank's part of a global batch (normal half first): ``[rank::world]`` of each half.

    Works on any object with ``rgb [B,...]``, ``labels [B]`` and ``modalities {name: [B,...]}``;
    returns ``(rgb, labels, modalities)``.
    """
    rgb, labels, mods = batch.rgb, batch.labels, batch.modalities
    if not info.enabled:
        return rgb, labels, mods
    total = rgb.shape[0]
    idx = torch.cat([
        torch.arange(info.rank, n_normal, info.world_size),
        torch.arange(n_normal + info.rank, total, info.world_size),
    ])
    return rgb[idx], labels[idx], {k: v[idx] for k, v in mods.items()}


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average ``.grad`` over ranks with one flat all-reduce (params without a grad are skipped;
    every rank runs the same code path, so all ranks skip the same ones)."""
    if not info.enabled:
        return
    _average_in_place([p.grad for p in params if p.grad is not None], info)


def average_batchnorm_stats(module: torch.nn.Module, info: DistInfo) -> None:
    """Average the running mean and variance of every BatchNorm layer in train mode over ranks (one flat
    all-reduce). Each rank normalises its own shard of the batch (this is not SyncBatchNorm), so without
    this their running statistics, and so their eval-mode models, would drift apart (RTFM's MTN)."""
    if not info.enabled:
        return
    stats = [t for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
             and m.track_running_stats for t in (m.running_mean, m.running_var) if t is not None]
    _average_in_place(stats, info)


def _average_in_place(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Replace each tensor by its mean over ranks, with one flat all-reduce (same list on every rank)."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Make every rank start from rank 0's weights."""
    if not info.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def _comm_device() -> str:
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def any_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any rank (used to stop together on a signal)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (in rank order) on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
