"""``pivad fit``: a folder of videos to a trained π-VAD and its report, in resumable stages.

Stages, in order, each recorded in ``RUN/fit.json`` (atomically) when it completes:

    index       pivad data index into RUN/data (lists, annotation, ground truth, pivad.yaml)
    rgb         I3D features RUN/data/rgb/<folder>/<video>__<c>.npy (pivad extract rgb's worker)
    modalities  RUN/data/modalities/<m>/<video>.npy (pivad extract modalities' worker; flow: DIS)
    train       teacher, π-VAD steps 1 and 2 into RUN/train (pivad train's trainer)
    evaluate    RUN/train/metrics.json, plots and report.html (when the test set has intervals)

``--resume`` skips completed stages; extraction skips the videos whose files exist (each written
atomically) and training continues from ``RUN/train/last.pt`` (exact resume, pivad.engine.trainer),
so a killed run ends with the same model and report as an uninterrupted one. The training config
(``RUN/config.yaml``) is the index's ``pivad.yaml`` plus the modality store plus ``-c FILE`` plus the
overrides; it is
written once, before training, and a resumed run must be given the same arguments.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pivad.errors import ConfigError, PivadError

RECORD = "fit.json"
STAGES = ("index", "rgb", "modalities", "train", "evaluate")
# fit's arguments that determine the outcome: a resumed run must be given the same ones
OUTCOME_ARGS = ("videos", "annotations", "unit", "test_fraction", "seed", "crops", "modalities", "models",
                "weights", "resize", "crop_size", "flow_size", "config", "overrides")


def _say(stage: str, message: str) -> None:
    print(f"pivad fit [{STAGES.index(stage) + 1}/{len(STAGES)} {stage}] {message}", file=sys.stderr)


class FitRun:
    """One ``pivad fit`` run folder and its stage record."""

    def __init__(self, args: argparse.Namespace):
        from pivad.config import from_dict, load_config, merge_dict, overrides_to_dict, read_yaml

        self.args = args
        self.out = Path(args.out)
        self.data = self.out / "data"
        self.train_dir = self.out / "train"
        from pivad.data.index import check_split_args
        from pivad.extract.modalities import check_flow_size

        check_split_args(args.test_fraction, args.seed)  # before the folder and its record are made
        check_flow_size(args.flow_size)
        self.modalities = parse_modalities(args.modalities)
        self.models = parse_models(args.model or [], self.modalities)
        self.user_config = str(Path(args.config).resolve()) if args.config else None
        self.overrides = merge_dict(read_yaml(args.config) if args.config else {}, overrides_to_dict(args.overrides or []))
        if args.config:
            load_config(args.config)  # its errors name the file
        from_dict(self.overrides)  # an unknown key or a wrong type fails now, not after the extraction
        self.settings = {
            "videos": str(Path(args.videos).resolve()),
            "annotations": str(Path(args.annotations).resolve()) if args.annotations else None,
            "unit": args.unit, "test_fraction": args.test_fraction, "seed": args.seed, "crops": args.crops,
            "modalities": self.modalities, "models": self.models, "weights": args.weights,
            "resize": args.resize, "crop_size": args.crop_size, "flow_size": args.flow_size,
            "config": self.user_config, "overrides": list(args.overrides or []),
        }
        self.record: dict[str, Any] = {"settings": self.settings, "stages": {}}

    # ----------------------------------------------------------------------------------- record

    def open(self) -> None:
        """Check a new run's ``--out``, or (``--resume``) load the record of the run there."""
        import json

        from pivad.outputs import check_output_dir

        check_output_dir(self.out)
        path = self.out / RECORD
        if self.args.resume:
            try:
                old = json.loads(path.read_text())
            except FileNotFoundError:
                raise PivadError(f"{path}: nothing to resume (no pivad fit run in {self.out})") from None
            except (OSError, ValueError) as exc:
                raise PivadError(f"{path}: unreadable fit record ({exc})") from None
            started = old.get("settings", {}) if isinstance(old, dict) else {}
            for key in OUTCOME_ARGS:
                if started.get(key) != self.settings[key]:
                    raise ConfigError(f"{path}: the run was started with {key} = {started.get(key)!r}, "
                                      f"not {self.settings[key]!r}; resume with the same arguments")
            self.record = old
        elif path.exists() or (self.out.is_dir() and any(self.out.iterdir())):
            raise PivadError(f"{self.out}: not empty; continue its run with --resume or choose another --out")

    def _save(self) -> None:
        from pivad.io import atomic_write_json

        atomic_write_json(self.out / RECORD, self.record)

    def done(self, stage: str) -> bool:
        return stage in self.record["stages"]

    def complete(self, stage: str, info: dict[str, Any], seconds: float) -> None:
        self.record["stages"][stage] = {**info, "seconds": round(seconds, 3)}
        self._save()
        _say(stage, f"done in {seconds:.1f} s")

    # ----------------------------------------------------------------------------------- stages

    def run(self) -> int:
        self.open()
        if self.modalities and not self.done("modalities"):
            self._modality_worker()  # a missing backbone or weights file fails before hours of I3D
        self._save()
        for stage in STAGES:
            if self.done(stage):
                _say(stage, "already done (recorded in fit.json)")
                continue
            t0 = time.perf_counter()
            info = getattr(self, f"_{stage}")()
            if info is None:  # interrupted (training): the record stays open
                return 130
            self.complete(stage, info, time.perf_counter() - t0)
        stages = self.record["stages"]
        print(f"model: {self.train_dir / 'best.pt'}")
        if stages["evaluate"].get("report"):
            print(f"report: {stages['evaluate']['report']}")
        extra = f" --i3d-weights {self.args.weights}" if self.args.weights else ""
        if (self.args.resize, self.args.crop_size) != ("340x256", 224):
            extra += f" --resize {self.args.resize} --crop-size {self.args.crop_size}"
        print(f"score new footage: pivad detect VIDEO --ckpt {self.train_dir / 'best.pt'} --crops {self.args.crops}"
              f"{extra} --html")
        return 0

    def _index(self) -> dict[str, Any]:
        from pivad.data.index import index_videos

        a = self.args
        _say("index", f"{a.videos} -> {self.data}")
        index = index_videos(a.videos, self.data, annotations=a.annotations, unit=a.unit, test_fraction=a.test_fraction,
                             seed=a.seed, crops=a.crops, name=a.name)
        for message in index.warnings:
            print(f"pivad: warning: {message}", file=sys.stderr)
        return {"videos": len(index.videos), "test": len(index.split("test")), "annotated": index.annotated}

    def videos(self):
        from pivad.data.index import read_videos_csv

        return read_videos_csv(self.data / "videos.csv")

    def _rgb(self) -> dict[str, Any]:
        from pivad.engine.malloc import keep_freed_memory
        from pivad.engine.provenance import RECORD as FEATURES_RECORD, i3d_identity
        from pivad.extract import rgb
        from pivad.extract.runner import VideoJob
        from pivad.io import atomic_write_json

        crops = self.args.crops
        root = self.data / "rgb"
        jobs = [VideoJob(v.name, v.path, rgb.crop_output_paths(root / v.folder, v.name, crops)) for v in self.videos()]
        todo = sum(not job.is_done() for job in jobs)
        _say("rgb", f"I3D, {crops} crop(s): {todo} of {len(jobs)} videos to extract")
        from pivad.video.crops import Resize, check_crop

        try:
            resize = Resize.parse(self.args.resize)
        except ValueError as exc:
            raise PivadError(f"--resize: {exc}") from None
        check_crop(resize, self.args.crop_size)
        options = rgb.RGBOptions(crops=crops, weights=self.args.weights, resize=resize, crop_size=self.args.crop_size)
        worker = rgb.RGBExtractor(options)
        if todo:
            keep_freed_memory()
            worker.model  # noqa: B018 - a bad weights path fails before the first video
        _run_all(jobs, worker, "extract rgb", not self.args.no_progress)
        atomic_write_json(root / FEATURES_RECORD, {"extractor": "pivad fit", "i3d": i3d_identity(self.args.weights),
                                                   "crops": crops, "crop_size": self.args.crop_size, "resize": self.args.resize,
                                                   "interp": "lanczos", "precision": "fp32"})
        return {"videos": len(jobs), "extracted": todo}

    def _modalities(self) -> dict[str, Any]:
        from pivad.extract import manifest
        from pivad.extract import modalities as mod

        if not self.modalities:
            _say("modalities", "none requested: π-VAD needs one; training the UR-DMU teacher alone")
            return {"dims": {}}
        root = self.data / "modalities"
        worker = self._modality_worker()
        entries = {m: manifest.make_entry({**mod.describe(bb), "decode_max_side": worker.options.max_side})
                   for m, bb in worker.backbones.items()}
        manifest.reconcile(root, entries, force=False)
        videos = self.videos()
        jobs = mod.video_jobs([v.path for v in videos], root, self.modalities)
        todo = sum(not job.is_done() for job in jobs)
        _say("modalities", f"{', '.join(self.modalities)}: {todo} of {len(jobs)} videos to extract")
        _run_all(jobs, worker, "extract modalities", not self.args.no_progress)
        return {"dims": {m: int(e["dim"]) for m, e in entries.items()}}

    def _modality_worker(self):
        """``pivad extract modalities``' worker for the requested modalities, backbones built (once)."""
        if getattr(self, "_worker", None) is None:
            from pivad.extract import modalities as mod

            parser = argparse.ArgumentParser(prog="pivad fit")
            mod.add_arguments(parser)
            argv = ["--out", str(self.data / "modalities"), "--modalities", ",".join(self.modalities),
                    "--flow-size", str(self.args.flow_size)]
            for m, spec in self.models.items():
                argv += [f"--{m}-model", spec]
            worker = mod.ModalityExtractor(mod.options_from_args(parser.parse_args(argv)), self.data / "modalities")
            worker.backbones  # noqa: B018 - builds them: a missing model or weights file fails here
            self._worker = worker
        return self._worker

    def config(self):
        """The training config: the index's pivad.yaml, the modality store, ``-c FILE``, the overrides."""
        from pivad.config import load_config, merge_dict

        dims = self.record["stages"]["modalities"]["dims"]
        extra: dict[str, Any] = {"data": {"modality_root": str((self.data / "modalities").resolve()) if dims else "",
                                          "modalities": [{"name": m, "dim": d} for m, d in dims.items()]},
                                 "train": {"model": "pivad" if dims else "urdmu"}}
        return load_config(self.data / "pivad.yaml", merge_dict(extra, self.overrides))

    def _train(self) -> dict[str, Any] | None:
        from pivad.config import load_config, save_config
        from pivad.engine.preflight import check_run_inputs
        from pivad.engine.trainer import train

        last = self.train_dir / "last.pt"
        resume = last.is_file()
        if resume:
            _say("train", f"continuing from {last}")
            cfg = load_config(self.out / "config.yaml")  # the run goes on with last.pt's own; this picks the device
        else:
            cfg = self.config()
            check_run_inputs(cfg, evaluate=bool(cfg.data.annotation or cfg.data.gt))
            if self.train_dir.exists():  # killed before its first checkpoint: nothing to keep
                shutil.rmtree(self.train_dir)
            save_config(cfg, self.out / "config.yaml")
            phases = (f"teacher {cfg.train.teacher_steps} steps"
                      + (f", π-VAD {cfg.train.warmup_steps} + {cfg.train.steps} steps" if cfg.train.model == "pivad" else ""))
            _say("train", f"{phases} into {self.train_dir}")
        result = train(cfg, self.train_dir, resume=resume, progress=not self.args.no_progress,
                       stop_after=self.args.stop_after)
        if result.interrupted:
            print(f"pivad: stopped at step {result.global_step}; continue with: pivad fit {self.args.videos} "
                  f"--out {self.out} --resume (and the same options)", file=sys.stderr)
            return None
        return {"global_step": result.global_step, "best": result.best}

    def _evaluate(self) -> dict[str, Any]:
        from pivad.config import load_config
        from pivad.engine.report import evaluate_run
        from pivad.report.evaluation import write_evaluation_html

        cfg = load_config(self.train_dir / "config.yaml")
        if not (cfg.data.annotation or cfg.data.gt):
            _say("evaluate", "skipped: the test videos have no intervals (give --annotations to evaluate)")
            return {"report": None}
        _say("evaluate", f"test set of {self.train_dir / 'config.yaml'}")
        evaluate_run(self.train_dir, progress=not self.args.no_progress)
        log = self.train_dir / "log.jsonl"
        page = write_evaluation_html(self.train_dir, log if log.is_file() else None)
        return {"metrics": str(self.train_dir / "metrics.json"), "report": str(page)}


def _run_all(jobs: list, worker: Any, desc: str, progress: bool) -> None:
    """Run extraction jobs (finished ones skipped); a failed video stops the stage with its error."""
    from pivad.extract.runner import run_jobs

    summary = run_jobs(jobs, worker, progress=progress, desc=desc)
    failed = summary.failed
    if failed:
        more = f" (and {len(failed) - 1} more video(s))" if len(failed) > 1 else ""
        raise PivadError(f"{failed[0].error}{more}")


def parse_modalities(text: str) -> list[str]:
    from pivad.extract.backbones import MODALITIES

    if text.strip().lower() in ("", "none"):
        return []
    names = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in names if m not in MODALITIES]
    if unknown:
        raise PivadError(f"--modalities: unknown {', '.join(unknown)} (known: {', '.join(MODALITIES)}, or none)")
    return names


def parse_models(items: list[str], modalities: list[str]) -> dict[str, str]:
    """``--model MODALITY=SPEC`` values; neural backbones need local weights or the hub's cache."""
    out = {}
    for item in items:
        m, sep, spec = item.partition("=")
        if not sep or not spec or m not in modalities:
            raise PivadError(f"--model {item}: expected MODALITY=SPEC for one of --modalities ({', '.join(modalities) or 'none'})")
        out[m] = spec
    return out
