"""The training loop: UR-DMU teacher, then π-VAD step 1 (L_first) and step 2 (L_second).

Phases (paper Section 4.4), each a plain loop over steps of one balanced batch:

    teacher  UR-DMU on L_MIL for ``train.teacher_steps`` (skipped when ``train.teacher_ckpt`` is set)
    first    π-VAD warm-up on L_first = L_PMG + L_align + L_distill for ``train.warmup_steps``
    second   π-VAD on L_second = L_MIL + λ1·L_align + λ2·L_distill + L_PMG for ``train.steps``

``train.model: urdmu`` (or the name of ``model.backbone``) runs only the teacher phase (the baseline).
Teacher and student are the backbone ``model.backbone`` (UR-DMU, PEL4VAD, RTFM: docs/backbones.md). π-VAD's two steps share one Adam
optimiser (the warm-up's moments carry into step 2). One balanced loader feeds all phases.

Files (rank 0 only) in the run directory: ``last.pt`` every ``train.eval_every`` steps, at the end of
each phase and on SIGINT/SIGTERM; ``best.pt`` whenever the selection score improves (for π-VAD runs
the teacher's best goes to ``teacher.pt`` and is the teacher the student distils from); ``log.jsonl``.

Exact resume: a checkpoint holds weights, optimiser, loader state, the best score so far and every
rank's RNG states, and nothing else influences the next step, so ``--resume`` reaches the same final
weights and log as an uninterrupted run. Killed between checkpoints, a run replays the steps since its last
checkpoint (the log is truncated to that step).
"""

from __future__ import annotations

import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pivad.config import Config, check_config, save_config, to_dict
from pivad.engine import ddp
from pivad.engine.checkpoint import (checkpoint_config, load_checkpoint, load_model, rng_state, save_checkpoint,
                                     set_rng_state)
from pivad.engine.evaluate import GroundTruth, modality_inputs, selection_score
from pivad.engine.logging import MetricLogger
from pivad.engine.precision import autocast, prepare_model, to_float
from pivad.errors import CheckpointError, ConfigError

PHASES = ("teacher", "first", "second")


@dataclass
class TrainResult:
    run_dir: Path
    interrupted: bool = False
    global_step: int = 0
    best: dict = field(default_factory=dict)  # {"score", "phase", "step"} of the kept checkpoint
    seconds: float = 0.0
    model: Any = None  # the final model in memory (the last phase's), for callers and tests


def plan_phases(cfg: Config) -> list[tuple[str, int]]:
    """(phase, steps) in order for this config."""
    t = check_config(cfg).train  # values set on the object after it was loaded are checked too
    if t.model != "pivad":  # the backbone alone (the config check makes it model.backbone)
        return [("teacher", t.teacher_steps)]
    phases = [] if t.teacher_ckpt else [("teacher", t.teacher_steps)]
    return phases + [("first", t.warmup_steps), ("second", t.steps)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, info: ddp.DistInfo) -> torch.device:
    if name == "auto":
        name = f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and info.enabled:
        name = f"cuda:{info.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available")
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def selection_label(selection: str) -> str:
    return "test-selected" if selection == "test" else "val-selected"


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop checkpoints and leaves at the end of the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopFlag":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _to_device(batch: Any, info: ddp.DistInfo, n_normal: int, device: torch.device):
    rgb, labels, mods = ddp.shard_batch(batch, info, n_normal)
    rgb = torch.as_tensor(rgb, dtype=torch.float32).to(device, non_blocking=True)
    labels = torch.as_tensor(labels, dtype=torch.float32).to(device, non_blocking=True)
    mods = {k: torch.as_tensor(v, dtype=torch.float32).to(device, non_blocking=True) for k, v in mods.items()}
    return rgb, labels, mods


def step_loss(model: torch.nn.Module, phase: str, rgb: torch.Tensor, labels: torch.Tensor,
              mods: dict[str, torch.Tensor], cfg: Config) -> tuple[torch.Tensor, dict]:
    """One training step's ``(loss, parts)``: the forward pass at ``train.precision``, the loss in float32."""
    from pivad.losses.backbone import backbone_loss
    from pivad.losses.inductor import pivad_loss

    with autocast(rgb.device, cfg.train.precision):
        out = model(rgb) if phase == "teacher" else model(rgb, modalities=mods, phase=phase)
    out = to_float(out)
    if phase == "teacher":
        return backbone_loss(out, labels, cfg)
    return pivad_loss(out, labels, cfg.loss, phase, cfg)


def micro_batches(rgb: torch.Tensor, labels: torch.Tensor, mods: dict[str, torch.Tensor], size: int):
    """``[(rgb, labels, mods, weight)]``: a balanced batch (normal half first) as micro-batches of at most
    ``size`` crops, each again normal half first; ``weight`` is its share of the pairs (0: one pass)."""
    B = rgb.shape[0]
    if size <= 0 or size >= B:
        return [(rgb, labels, mods, 1.0)]
    if size % 2 or B % 2:
        raise ConfigError(f"train.micro_batch: expected an even number of crops, got {size} for a batch of {B}")
    n, half = B // 2, size // 2
    chunks = []
    for start in range(0, n, half):
        pairs = torch.arange(start, min(start + half, n), device=rgb.device)
        idx = torch.cat([pairs, pairs + n])  # (2 * pairs,) normal crops, then their abnormal partners
        chunks.append((rgb[idx], labels[idx], {k: v[idx] for k, v in mods.items()}, len(pairs) / n))
    return chunks


def backward_step(model: torch.nn.Module, phase: str, rgb: torch.Tensor, labels: torch.Tensor,
                  mods: dict[str, torch.Tensor], cfg: Config, loss_fn=None) -> tuple[torch.Tensor, dict]:
    """One step's forward and backward, in micro-batches of ``train.micro_batch`` crops; ``(loss, parts)`` detached.

    Every loss term is a mean over crops (or normal/abnormal pairs, which stay together: UR-DMU's triplet
    pairs normal crop i with abnormal crop i), so the weighted sum of micro-batch gradients is the whole
    batch's gradient: the same step as one pass, up to float rounding, with the memory of one micro-batch.
    Dropout and reparameterisation noise are drawn per micro-batch (the same distribution, other draws).
    Gradients accumulate into ``.grad``: zero them before.
    """
    loss_fn = loss_fn or (lambda *a: step_loss(model, phase, *a, cfg))
    total = torch.zeros((), device=rgb.device)
    parts_sum: dict[str, torch.Tensor | float] = {}
    for x, y, m, weight in micro_batches(rgb, labels, mods, cfg.train.micro_batch):
        loss, parts = loss_fn(x, y, m)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{phase}: loss is {loss.item()} (lower train.lr?)")
        (loss * weight).backward()  # weight 1.0 (one pass) leaves the gradients exact
        total += loss.detach() * weight
        for k, v in parts.items():
            v = v.detach() if torch.is_tensor(v) else v
            parts_sum[k] = parts_sum.get(k, 0.0) + v * weight
    return total, parts_sum


class Trainer:
    """Holds one run's state; :meth:`run` is the loop."""

    def __init__(self, cfg: Config, run_dir: str | Path, *, resume: bool = False, stop_after: int | None = None,
                 progress: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.resume_ckpt = None
        if resume:
            last = self.run_dir / "last.pt"
            if not last.is_file():
                raise CheckpointError(f"{last}: nothing to resume (no last.pt in the run directory)")
            self.resume_ckpt = load_checkpoint(last)
            cfg = checkpoint_config(self.resume_ckpt, last)  # a run continues with its own config
        self.cfg = cfg
        self.phases = plan_phases(cfg)
        self.stop_after = stop_after  # test hook: checkpoint and leave after this global step
        self.progress = progress
        self.info = ddp.init_distributed(cfg.train.device)
        self.device = resolve_device(cfg.train.device, self.info)
        self.is_main = self.info.is_main
        self.teacher_best = "teacher.pt" if cfg.train.model == "pivad" else "best.pt"  # the teacher phase's pick

    # -------------------------------------------------------------------------------------- setup

    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            import os

            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        seed_everything(cfg.train.seed + self.info.rank)
        from pivad.data.datasets import BalancedLoader, build_datasets

        self.data = build_datasets(cfg, test=cfg.train.selection == "test", progress=self.progress and self.is_main)
        if cfg.data.batch_normal % self.info.world_size or cfg.data.batch_abnormal % self.info.world_size:
            raise ConfigError(f"data.batch_normal/batch_abnormal must be divisible by the {self.info.world_size} ranks")
        self.loader = BalancedLoader(self.data.train_normal, self.data.train_abnormal, cfg.data.batch_normal,
                                     cfg.data.batch_abnormal, seed=cfg.train.seed)
        self.gt = GroundTruth.from_config(cfg) if cfg.train.selection == "test" else None
        self.modality_kwargs = modality_inputs(cfg) if cfg.train.model == "pivad" else None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self.logger = MetricLogger(self.run_dir, enabled=self.is_main, echo=not self.progress)

    def _new_model(self, kind: str) -> torch.nn.Module:
        from pivad.models.factory import build_model

        return prepare_model(build_model(kind, self.cfg).to(self.device), self.cfg.train)

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """Adam; ``train.inductor_lr`` gives the PIs (PMG + CMI) and ``train.pmg_lr`` the PMGs their own rate."""
        t = self.cfg.train
        params = [p for p in model.parameters() if p.requires_grad]
        inductors = getattr(model, "inductors", None)
        pi_lr = t.inductor_lr if t.inductor_lr > 0 else t.lr
        pmg_lr = t.pmg_lr if t.pmg_lr > 0 else pi_lr
        if inductors is None or (pi_lr == t.lr and pmg_lr == t.lr):
            return torch.optim.Adam(params, lr=t.lr, betas=(0.9, 0.999), weight_decay=t.weight_decay)
        pmg = {id(p) for pi in inductors.values() if pi.pmg is not None for p in pi.pmg.parameters()}
        if pmg_lr == pi_lr:
            pmg = set()  # one PI group, as before train.pmg_lr existed (same optimizer state layout)
        pis = {id(p) for p in inductors.parameters()} - pmg
        groups = [{"params": [p for p in params if id(p) not in pis | pmg]},
                  {"params": [p for p in params if id(p) in pis], "lr": pi_lr},
                  {"params": [p for p in params if id(p) in pmg], "lr": pmg_lr}]
        return torch.optim.Adam([g for g in groups if g["params"]], lr=t.lr, betas=(0.9, 0.999),
                                weight_decay=t.weight_decay)

    def _load_teacher(self) -> torch.nn.Module:
        """The frozen teacher (a ``model.backbone``): this run's ``teacher.pt`` or ``train.teacher_ckpt``."""
        path = Path(self.cfg.train.teacher_ckpt) if self.cfg.train.teacher_ckpt else self.run_dir / "teacher.pt"
        teacher, tcfg, meta = load_model(path, self.cfg)
        backbone = self.cfg.model.backbone
        if meta["kind"] != backbone:
            raise CheckpointError(f"{path}: the teacher must be a {backbone} checkpoint (model.backbone), "
                                  f"found {meta['kind']}")
        if backbone == "urdmu" and (tcfg.model.hidden_dim, tcfg.model.input_dim) != (
                self.cfg.model.hidden_dim, self.cfg.model.input_dim):
            raise ConfigError(f"{path}: teacher widths (input {tcfg.model.input_dim}, hidden {tcfg.model.hidden_dim})"
                              f" differ from model.* of this config")
        if backbone != "urdmu" and (teacher.input_dim, teacher.hook_points) != (
                self.cfg.model.input_dim, self._new_model(backbone).hook_points):
            raise ConfigError(f"{path}: teacher widths (input {teacher.input_dim}, hook points "
                              f"{teacher.hook_points}) differ from this config's {backbone}")
        return teacher.to(self.device).eval()

    def _phase_model(self, phase: str) -> torch.nn.Module:
        """A fresh model for ``phase`` (UR-DMU, or π-VAD holding the frozen teacher), same on every rank."""
        if phase == "teacher":
            model = self._new_model(self.cfg.model.backbone)
        else:
            model = self._new_model("pivad")
            teacher = self._load_teacher()
            model.set_teacher(teacher)
            if self.cfg.train.student_init == "teacher":
                model.student.load_state_dict(teacher.state_dict())
            if self.cfg.train.student_clean:
                model.student.set_clean()
            if self.cfg.inductor.pmg_standardize:
                model.set_modality_stats(self._modality_stats())
        ddp.broadcast_parameters(model, self.info)
        return model

    def _modality_stats(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-dimension mean and std of each modality over the training videos' (resampled) snippets."""
        from pivad.data.modality_stats import modality_stats

        sets = (self.data.train_normal, self.data.train_abnormal)
        stats = {}
        for m in self.cfg.data.modalities:
            mean, std = modality_stats(sets, m.name)  # (d,), (d,)
            stats[m.name] = (torch.from_numpy(mean).to(self.device), torch.from_numpy(std).to(self.device))
        return stats

    # -------------------------------------------------------------------------------- checkpoints

    def _payload(self, model: torch.nn.Module, opt: torch.optim.Optimizer, phase: str, step: int,
                 metrics: dict, rngs: list) -> dict:
        return {
            "kind": self.cfg.model.backbone if phase == "teacher" else "pivad",
            "config": to_dict(self.cfg),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "phase": phase,
            "step": step,
            "global_step": self.global_step,
            "metrics": metrics,
            "threshold": self.cfg.eval.threshold,
            "rng": rngs,
            "loader": self.loader.state_dict(),
            "best": dict(self.best),
            "selection": self.cfg.train.selection,
            "log_window": {k: list(v) for k, v in self._log_window.items()},  # losses since the last log line
        }

    def _save_last(self, model, opt, phase: str, step: int, metrics: dict) -> None:
        rngs = ddp.gather_objects(rng_state(), self.info)  # every rank takes part
        if self.is_main:
            save_checkpoint(self.run_dir / "last.pt", self._payload(model, opt, phase, step, metrics, rngs))

    def _select(self, model, opt, phase: str, step: int) -> dict:
        """Evaluate the selection score (rank 0), keep the best checkpoint; returns the metrics."""
        if phase == "first":  # the warm-up trains no anomaly head: nothing to select on
            return {}
        metrics: dict = {}
        if self.is_main:
            cfg = self.cfg
            model.eval()
            score, metrics = selection_score(
                model, selection=cfg.train.selection, val=self.data.val, test=self.data.test, gt=self.gt,
                metric=cfg.eval.metric, ap_form=cfg.eval.ap_form, device=self.device,
                batch_crops=cfg.eval.batch_crops, modality_kwargs=self.modality_kwargs if phase != "teacher" else None)
            model.train()
            metrics = dict(metrics, selection_score=score)
            best_score = self.best.get("score")
            improved = score is not None and (best_score is None or score > best_score)
            if improved or (score is None and best_score is None):  # no selection data: keep the latest
                self.best = {"score": score, "phase": phase, "step": step, "global_step": self.global_step}
                payload = self._payload(model, opt, phase, step, metrics, [])
                payload["optimizer"] = None
                save_checkpoint(self.run_dir / (self.teacher_best if phase == "teacher" else "best.pt"), payload)
            self.logger.log(self.global_step, phase, step, metrics)
        ddp.barrier(self.info)
        return metrics

    # ------------------------------------------------------------------------------------- the loop

    def _loss(self, model, phase: str, rgb, labels, mods):
        return step_loss(model, phase, rgb, labels, mods, self.cfg)

    def run(self) -> TrainResult:
        threads = torch.get_num_threads()
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)  # train.threads applies to this run only

    def _run(self) -> TrainResult:
        t0 = time.time()
        self._setup()
        cfg = self.cfg
        self.global_step = 0
        self.best: dict = {}
        start_phase, start_step = 0, 0
        ck = self.resume_ckpt
        # per-step losses not yet averaged into a log line (checkpointed: a resumed run logs the same lines)
        window = (ck or {}).get("log_window") or {}
        self._log_window: dict[str, list[float]] = {k: list(v) for k, v in window.items()}
        if ck is not None:
            start_phase = [p for p, _ in self.phases].index(ck["phase"])
            start_step = int(ck["step"])
            self.global_step = int(ck["global_step"])
            self.best = dict(ck.get("best") or {})
            self.loader.load_state_dict(ck["loader"])
            self.logger.truncate_after(self.global_step)
        n_normal = cfg.data.batch_normal
        model = opt = None
        interrupted = False
        try:
            with _StopFlag() as stop:
                for pi, (phase, steps) in enumerate(self.phases):
                    if pi < start_phase:
                        continue
                    first_step = 0
                    teacher_done = phase == "teacher" and cfg.train.model == "pivad"
                    if ck is not None and pi == start_phase:
                        first_step = start_step
                        if first_step < steps or not teacher_done:
                            # this phase's model and optimiser exactly as checkpointed
                            model = self._phase_model(phase)
                            model.load_state_dict(ck["model"])
                            opt = self._optimizer(model)
                            opt.load_state_dict(ck["optimizer"])
                        self._restore_rng(ck["rng"])
                    elif not (phase == "second" and model is not None):
                        model = self._phase_model(phase)
                        opt = self._optimizer(model)
                    if first_step < steps:
                        model.train()
                        interrupted = self._run_phase(model, opt, phase, steps, first_step, n_normal, stop)
                        if interrupted:
                            break
                    if teacher_done:
                        self._finish_teacher(model, opt, steps)
                        model = opt = None
                        self.best = {}
        finally:
            self.logger.close()
        ddp.barrier(self.info)
        return TrainResult(self.run_dir, interrupted, self.global_step, dict(self.best), time.time() - t0, model)

    def _restore_rng(self, rngs: list) -> None:
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        else:
            print(f"pivad: resuming on {self.info.world_size} ranks from a {len(rngs)}-rank checkpoint:"
                  " RNG streams restart (not bit-identical)", file=sys.stderr)
            seed_everything(self.cfg.train.seed + self.info.rank + self.global_step)

    def _finish_teacher(self, model, opt, steps: int) -> None:
        """Make sure ``teacher.pt`` exists (the selected teacher, or the last one without selection data)."""
        if self.is_main and model is not None and not (self.run_dir / "teacher.pt").is_file():
            payload = self._payload(model, opt, "teacher", steps, {}, [])
            payload["optimizer"] = None
            save_checkpoint(self.run_dir / "teacher.pt", payload)
        ddp.barrier(self.info)

    def _run_phase(self, model, opt, phase: str, steps: int, first_step: int, n_normal: int,
                   stop: _StopFlag) -> bool:
        """Steps ``first_step+1 .. steps`` of one phase; True if stopped early (checkpointed)."""
        cfg = self.cfg
        params = [p for p in model.parameters() if p.requires_grad]
        running: dict[str, float] = {}
        window = self._log_window
        bar = tqdm(range(first_step + 1, steps + 1), desc=phase, initial=first_step, total=steps,
                   disable=not (self.progress and self.is_main), dynamic_ncols=True, file=sys.stderr)
        for step in bar:
            batch = next(self.loader)
            rgb, labels, mods = _to_device(batch, self.info, n_normal, self.device)
            opt.zero_grad(set_to_none=True)
            try:
                loss, parts = backward_step(model, phase, rgb, labels, mods, cfg,
                                            loss_fn=lambda *a: self._loss(model, phase, *a))
            except FloatingPointError as e:
                raise FloatingPointError(f"step {step}: {e}") from None
            ddp.average_gradients(params, self.info)
            opt.step()
            ddp.average_batchnorm_stats(model, self.info)
            self.global_step += 1

            values = {"loss": float(loss)}
            values.update({k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in parts.items()})
            for k, v in values.items():
                running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
                window.setdefault(k, []).append(v)
            bar.set_postfix({k: f"{running[k]:.3g}" for k in list(running)[:4]}, refresh=False)
            if step % cfg.train.log_every == 0 or step == steps:
                self.logger.log(self.global_step, phase, step, {k: sum(v) / len(v) for k, v in window.items()})
                window.clear()

            metrics: dict = {}
            at_end = step == steps
            if step % cfg.train.eval_every == 0 or at_end:
                metrics = self._select(model, opt, phase, step)
                self._save_last(model, opt, phase, step, metrics)
            hook = self.stop_after is not None and self.global_step >= self.stop_after
            if ddp.any_flag(stop.requested or hook, self.info):
                if not (step % cfg.train.eval_every == 0 or at_end):
                    self._save_last(model, opt, phase, step, metrics)
                bar.close()
                return True
        bar.close()
        return False


def train(cfg: Config | None, run_dir: str | Path, *, resume: bool = False, stop_after: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train per ``cfg`` into ``run_dir`` (or continue it with ``resume=True``, where the run's own config is
    used and ``cfg`` may be None), holding the run folder's lock on rank 0 (:func:`pivad.engine.runs.run_lock`:
    a second writer is refused)."""
    from contextlib import nullcontext

    from pivad.engine.runs import run_lock

    device = cfg.train.device if cfg is not None else "auto"
    with run_lock(run_dir) if ddp.init_distributed(device).is_main else nullcontext():
        return Trainer(cfg, run_dir, resume=resume, stop_after=stop_after, progress=progress).run()
