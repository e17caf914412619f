"""Seeded studies: a teacher (the configured backbone alone) against π-VAD variants over training seeds
(× data seeds).

Every pair trains one teacher (shared by every variant whose teacher settings match, :data:`TEACHER_KEYS`)
and one π-VAD per variant distilled from it; each run is evaluated on the test split (frame AUC, AUC_A,
AP, AP_A, video AUC) for its selected checkpoint and, for π-VAD, its last one. A pair is a (data seed,
training seed) on synthetic data (one generated dataset per data seed) and a training seed alone on a
config's own features. Runs go ``lanes`` at a time, one thread each (``lanes > 1``: worker processes);
each run's ``result.json`` is written atomically when it finishes, so a study started again skips what
is done and a run killed midway continues from its ``last.pt``.

Layout of the study folder ``OUT``::

    study_setup.json          the config it was made with (a fingerprint) and every variant's overrides
    data/seed<D>/             synthetic datasets (synthetic studies only)
    teachers/<key>/<pair>/    teacher runs (<key>: hash of the teacher settings)
    runs/<variant>/<pair>/    π-VAD runs
    NAME.json, NAME.md, NAME.html   the summary (:mod:`pivad.engine.study_report`)

``<pair>`` is ``d<D>_s<S>`` on synthetic data and ``s<S>`` on real features.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from pivad.config import MAX_SEED
from pivad.errors import ConfigError, DataError

SETUP = "study_setup.json"
MAX_SEEDS = 10_000  # seeds in one --seeds/--data-seeds list (a typo such as 1-10000000 is refused, not built)
# settings that change the teacher: a variant that leaves all of them alone shares the teacher runs
TEACHER_KEYS = {"model": None, "data": ("num_segments", "batch_normal", "batch_abnormal", "val_fraction"),
                "train": ("teacher_steps", "lr", "weight_decay", "eval_every", "selection")}
# on real features a variant may point the data elsewhere: the whole data section keys the teacher
REAL_TEACHER_KEYS = {**TEACHER_KEYS, "data": None}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...] = ()  # ("--section.key", "value", ...) on top of the study's config

    @property
    def text(self) -> str:
        return " ".join(self.overrides)


@dataclass
class StudySpec:
    out: Path
    config: str | None  # YAML file; None: the packaged demo config
    overrides: list[str]  # --section.key value for every run, before the variant's own
    preset: str | None  # synthetic preset (one dataset per data seed); None: the config's own features
    data_seeds: list[int]  # [] on real features
    train_seeds: list[int]
    variants: list[Variant]
    lanes: int = 2
    name: str = "study"
    family: int = 1  # synthetic generator family (docs/synthetic.md: v6 is 1, "Family 2" is 2)

    @property
    def synthetic(self) -> bool:
        return self.preset is not None


@dataclass
class Job:
    label: str
    run_dir: Path
    config: dict  # resolved config values
    checkpoints: tuple[str, ...]  # evaluated at the end: ("best",) for teachers, ("best", "last") for π-VAD
    teacher: Path | None = None  # π-VAD: the teacher run that must finish first


@dataclass
class Plan:
    teachers: dict[Path, Job] = field(default_factory=dict)
    students: list[tuple[str, int | None, int, Job]] = field(default_factory=list)  # (variant, ds, ts, job)


# ------------------------------------------------------------------------------------------- parsing


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """``"1-5"`` -> [1, 2, 3, 4, 5]; ``"0,2,7-8"`` -> [0, 2, 7, 8] (ranges inclusive, no repeats)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise ConfigError(f"{flag} '{text}': expected seeds like 1-5 or 0,2,4 (non-negative integers, "
                              "ranges low-high)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi > MAX_SEED:
            raise ConfigError(f"{flag} '{text}': seeds go up to {MAX_SEED}")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise ConfigError(f"{flag} '{text}': more than {MAX_SEEDS} seeds")
        seeds += range(lo, hi + 1)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{flag} '{text}': a seed is given twice")
    return seeds


def parse_variant(spec: str) -> Variant:
    """``"late:inductor.position=late,loss.lambda_distill=0.5"`` -> Variant("late", ("--inductor.position", ...))."""
    name, _, rest = spec.partition(":")
    usage = f"--variant '{spec}': expected NAME or NAME:section.key=value,section.key=value"
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{usage} (NAME: letters, digits, _ . + -)")
    overrides: list[str] = []
    if ":" in spec and not rest:
        raise ConfigError(usage)
    for item in rest.split(",") if rest else []:
        key, eq, value = item.partition("=")
        parts = key.split(".")
        if not eq or len(parts) < 2 or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
            raise ConfigError(f"{usage} (got '{item}')")
        overrides += [f"--{key}", value]
    return Variant(name, tuple(overrides))


# ------------------------------------------------------------------------------------------- configs


def config_values(spec: StudySpec) -> dict:
    """The study's config as given (file, then the study-wide overrides), before any data path is set."""
    from pivad.commands.demo import demo_values
    from pivad.config import merge_dict, overrides_to_dict, read_yaml

    base = demo_values(None, spec.overrides) if spec.config is None else read_yaml(spec.config)
    return merge_dict(base, overrides_to_dict(spec.overrides))


def fingerprint(spec: StudySpec) -> str:
    """What makes two studies comparable: the config's content, its overrides and the synthetic preset."""
    values = {"config": config_values(spec), "preset": spec.preset}
    if spec.family != 1:  # family 1 studies keep the fingerprints they were written with
        values["family"] = spec.family
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def data_dir(out: Path, ds: int) -> Path:
    return out / "data" / f"seed{ds}"


def run_config(spec: StudySpec, variant: Variant, ds: int | None, ts: int, model: str, extra: dict):
    """The resolved Config of one run (data seed ``ds`` on synthetic data, training seed ``ts``); ``model``:
    ``pivad``, or ``teacher`` for the config's ``model.backbone`` trained alone."""
    from pivad.config import from_dict, load_config, merge_dict, to_dict

    overrides = [*spec.overrides, *variant.overrides]
    try:
        if spec.synthetic:
            from pivad.commands.demo import demo_config

            with contextlib.redirect_stderr(io.StringIO()):  # batch fitting is said once, by the study
                cfg = demo_config(spec.config, overrides, data_dir(spec.out, ds), data_dir(spec.out, ds))
        else:
            cfg = load_config(spec.config, overrides)
    except ConfigError as exc:
        raise ConfigError(f"--variant {variant.name}: {exc}" if variant.overrides else str(exc)) from None
    kind = cfg.model.backbone if model == "teacher" else model  # the teacher: the run's own backbone alone
    return from_dict(merge_dict(to_dict(cfg), {"train": {"seed": ts, "model": kind, "threads": 1, **extra}}))


def check_variants(spec: StudySpec) -> None:
    """Every variant's overrides name known config keys with valid values (before any data is written)."""
    from pivad.config import from_dict, merge_dict, overrides_to_dict

    base = config_values(spec)
    from_dict(base)  # the config and the study-wide overrides, blamed on no variant
    for v in spec.variants:
        try:
            from_dict(merge_dict(base, overrides_to_dict(list(v.overrides))))
        except ConfigError as exc:
            raise ConfigError(f"--variant {v.name}: {exc}") from None


def teacher_key(cfg, synthetic: bool = True) -> str:
    from pivad.config import to_dict

    values = to_dict(cfg)
    keys = TEACHER_KEYS if synthetic else REAL_TEACHER_KEYS
    picked = {sec: ({k: values[sec][k] for k in ks} if ks else values[sec]) for sec, ks in keys.items()}
    return hashlib.sha1(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:10]


def pair_name(ds: int | None, ts: int) -> str:
    return f"s{ts}" if ds is None else f"d{ds}_s{ts}"


def plan(spec: StudySpec) -> Plan:
    """Every teacher and π-VAD run of the study (data seed outermost, so each variant's first data seed
    finishes first). On synthetic data, a data seed whose dataset is not written yet is left out."""
    from pivad.config import to_dict

    out = Plan()
    seeds: list[int | None] = list(spec.data_seeds) if spec.synthetic else [None]
    for ds in seeds:
        if ds is not None and not (data_dir(spec.out, ds) / "meta.json").is_file():
            continue
        for variant in spec.variants:
            for ts in spec.train_seeds:
                pair = pair_name(ds, ts)
                tcfg = run_config(spec, variant, ds, ts, "teacher", {})
                tdir = spec.out / "teachers" / teacher_key(tcfg, spec.synthetic) / pair
                out.teachers.setdefault(tdir, Job(f"teacher {tdir.parent.name}/{pair}", tdir, to_dict(tcfg), ("best",)))
                scfg = run_config(spec, variant, ds, ts, "pivad", {"teacher_ckpt": str(tdir / "best.pt")})
                sdir = spec.out / "runs" / variant.name / pair
                out.students.append((variant.name, ds, ts, Job(f"{variant.name} {pair}", sdir, to_dict(scfg),
                                                               ("best", "last"), tdir)))
    return out


# ---------------------------------------------------------------------------------------- the folder


def read_setup(out: Path) -> dict | None:
    path = out / SETUP
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable study setup ({exc})") from None


def check_setup(spec: StudySpec, setup: dict | None) -> None:
    """Refuse a folder made with another config, or a variant name reused with other overrides."""
    if setup is None:
        return
    path = spec.out / SETUP
    if setup.get("fingerprint") != fingerprint(spec):
        made = setup.get("config") or "the demo config"
        preset = f", preset {setup['preset']}" if setup.get("preset") else ""
        raise ConfigError(f"{path}: this study folder was made with another config ({made}{preset}, "
                          f"overrides: {' '.join(setup.get('overrides') or []) or 'none'}); give a new --out")
    known = setup.get("variants") or {}
    for v in spec.variants:
        if v.name in known and list(known[v.name]) != list(v.overrides):
            raise ConfigError(f"--variant {v.name}: {path} has a variant '{v.name}' with other overrides "
                              f"('{' '.join(known[v.name]) or '(config as is)'}'); give this one another name")


def write_setup(spec: StudySpec, setup: dict | None) -> dict:
    """Record the config's fingerprint and every variant, data seed and training seed run so far."""
    from pivad.io import atomic_write_json

    setup = dict(setup or {})
    variants = dict(setup.get("variants") or {})
    variants.update({v.name: list(v.overrides) for v in spec.variants})
    setup.update(config=spec.config, overrides=list(spec.overrides), preset=spec.preset, family=spec.family,
                 fingerprint=fingerprint(spec), variants=variants,
                 data_seeds=sorted(set(setup.get("data_seeds") or []) | set(spec.data_seeds)),
                 train_seeds=sorted(set(setup.get("train_seeds") or []) | set(spec.train_seeds)))
    atomic_write_json(spec.out / SETUP, setup)
    return setup


# ------------------------------------------------------------------------------------------- running


def _metrics(entry: dict) -> dict:
    from pivad.engine.study_summary import METRICS

    out = {k: entry.get(k) for k in METRICS}
    out.update(step=entry.get("step"), phase=entry.get("phase"))
    return out


def run_job(cfg_values: dict, run_dir: str, checkpoints: tuple[str, ...]) -> dict:
    """Train (or continue from ``last.pt``) one run on one thread, evaluate it, write ``result.json``."""
    import torch

    from pivad.config import from_dict
    from pivad.engine import trainer
    from pivad.engine.report import evaluate_checkpoints
    from pivad.io import atomic_write_json

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = Path(run_dir)
        t0 = time.time()
        result = trainer.train(from_dict(cfg_values), run, resume=(run / "last.pt").is_file(), progress=False)
        if result.interrupted:
            raise KeyboardInterrupt
        report = evaluate_checkpoints({k: run / f"{k}.pt" for k in checkpoints}, run, progress=False, plots=False,
                                      print_table=False)
    finally:
        torch.set_num_threads(threads)
    out = {k: _metrics(report["models"][k]) for k in checkpoints}
    out["seconds"] = time.time() - t0
    atomic_write_json(run / "result.json", out)
    if "last" not in checkpoints:  # teachers: only best.pt is read later
        (run / "last.pt").unlink(missing_ok=True)
    return out


def _init_worker() -> None:
    """One thread; a process group of its own, so a terminal's Ctrl-C reaches the study alone, which
    forwards one SIGINT (:func:`_stop_workers`: the run checkpoints at the end of its step); and leave
    when the study process is gone (a killed study must not leave runs behind)."""
    import threading

    os.environ["OMP_NUM_THREADS"] = "1"
    os.setpgrp()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)  # the run resumes from its last.pt when the study is started again

    threading.Thread(target=watch, daemon=True).start()


def _stop_workers(pool: Any) -> None:
    """Ask every worker's run to stop (SIGINT: it saves ``last.pt`` at the end of the current step;
    a second one stops it at once, as in ``pivad train``)."""
    for pid in list(getattr(pool, "_processes", None) or {}):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's stop) leaves the study the way Ctrl-C does."""
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _InProcess:
    """``lanes == 1``: the executor interface, running each job at once in this process."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future, as a pool does
            fut.set_exception(exc)
        return fut

    def __enter__(self) -> "_InProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def prepare_data(spec: StudySpec, log: Callable[[str], None]) -> None:
    """Write (or reuse) the synthetic dataset of every data seed."""
    from pivad.data.synth import write_synthetic_dataset

    for ds in spec.data_seeds:
        target = data_dir(spec.out, ds)
        if not (target / "meta.json").is_file():
            log(f"study: synthetic dataset '{spec.preset}' (family {spec.family}), data seed {ds}: {target}")
        write_synthetic_dataset(target, seed=ds, preset=spec.preset, family=spec.family)
    if spec.data_seeds and spec.variants:  # say once what the batch fitting of the demo config changes
        from pivad.commands.demo import demo_config

        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            demo_config(spec.config, spec.overrides, data_dir(spec.out, spec.data_seeds[0]), spec.out)
        for line in buf.getvalue().splitlines():
            log(line)


def run_study(spec: StudySpec, log: Callable[[str], None] | None = None) -> dict:
    """Run every run not done yet, then write and return the summary
    (:func:`pivad.engine.study_report.report_study`)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    setup = read_setup(spec.out)
    check_setup(spec, setup)
    check_variants(spec)
    if spec.synthetic:
        prepare_data(spec, log)
    runs = plan(spec)
    if runs.teachers:  # the inputs (features, lists, ground truth, modalities) checked before any training
        from pivad.config import from_dict
        from pivad.engine.preflight import check_run_inputs

        check_run_inputs(from_dict(next(iter(runs.teachers.values())).config), out_dir=spec.out)
    write_setup(spec, setup)
    done = {j.run_dir for j in [*runs.teachers.values(), *(s[3] for s in runs.students)]
            if (j.run_dir / "result.json").is_file()}
    todo_t = [j for j in runs.teachers.values() if j.run_dir not in done]
    todo_s = [s[3] for s in runs.students if s[3].run_dir not in done]
    total, finished, t0 = len(todo_t) + len(todo_s), 0, time.time()
    log(f"study: {len(runs.teachers)} teacher and {len(runs.students)} π-VAD runs, {len(done)} already done, "
        f"{total} to run in {spec.lanes} lane{'s' if spec.lanes > 1 else ''}")
    pool = (ProcessPoolExecutor(spec.lanes, mp_context=get_context("spawn"), initializer=_init_worker)
            if spec.lanes > 1 and total > 1 else _InProcess())
    with _sigterm_as_interrupt(), pool:
        running: dict[Future, Job] = {}

        def submit_ready() -> None:
            while len(running) < spec.lanes and (todo_t or todo_s):
                job = next((j for j in todo_s if j.teacher in done), None)
                if job is not None:
                    todo_s.remove(job)
                elif todo_t:
                    job = todo_t.pop(0)
                else:
                    break  # π-VAD runs waiting for a running teacher
                running[pool.submit(run_job, job.config, str(job.run_dir), job.checkpoints)] = job

        try:
            submit_ready()
            while running:
                finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished_now:
                    job = running.pop(fut)
                    res = fut.result()
                    done.add(job.run_dir)
                    finished += 1
                    log(f"[{finished}/{total}] {job.label}: AUC {100 * res['best']['auc']:.2f} "
                        f"({res['seconds']:.0f} s; {(time.time() - t0) / 60:.1f} min elapsed)")
                submit_ready()
        except KeyboardInterrupt:
            if running:
                log(f"study: stopping {len(running)} run{'s' if len(running) > 1 else ''} at the end of the "
                    "current step (a second Ctrl-C stops at once); the study resumes where it stopped")
            _stop_workers(pool)
            try:
                wait(running)
            except KeyboardInterrupt:
                _stop_workers(pool)
            raise
    from pivad.engine.study_report import report_study

    return report_study(spec)
