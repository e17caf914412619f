"""``pivad data``: dataset tools.

- ``pivad data gt``: frame-level ground truth of a test list from an annotation file (rule in
  :mod:`pivad.data.ground_truth`), written atomically as a flat uint8 ``.npy``.
- ``pivad data synth``: the synthetic dataset (:mod:`pivad.data.synth`).
- ``pivad data index VIDEOS --out DATA``: a dataset from a folder or CSV of videos (lists, annotation,
  ground truth and ``DATA/pivad.yaml``; :mod:`pivad.data.index`).
- ``pivad data check -c CONFIG``: load a config's lists, features and modality store and print a
  summary table; any bad input is a one-line error (exit 2).

Sub-verb modules are imported lazily so that one missing or broken module costs only its sub-verb.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pivad.errors import DataError

GT_FORMATS = ("ucf", "xd", "msad")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_verb", metavar="SUBVERB")

    gt = sub.add_parser(
        "gt",
        help="frame-level ground truth of a test list from an annotation file",
        description="Write the flat 0/1 frame ground truth of a test list: 16 frames per snippet, T read "
        "from each video's feature file(s), frames s..e inclusive abnormal, videos in list order.",
    )
    gt.add_argument("--list", required=True, dest="list_path", help="test list file (feature files)")
    gt.add_argument("--root", default="", help="folder that list entries are resolved against (default: the list's)")
    gt.add_argument("--annotation", required=True, help="temporal annotation file")
    gt.add_argument("--format", choices=GT_FORMATS, default="ucf", dest="fmt", help="annotation format")
    gt.add_argument("--out", required=True, help="output .npy (uint8 [sum 16*T])")
    gt.add_argument("--layout", choices=("per_crop", "per_video"), default="per_crop", help="list layout")
    gt.add_argument("--label-rule", default="", help="label rule of the list's names (default: the --format)")
    gt.add_argument("--snippet", type=int, default=16, help="frames per snippet")
    gt.set_defaults(_data_run=run_gt)

    synth = sub.add_parser("synth", help="write the synthetic dataset", description="Write the synthetic dataset.")
    try:
        from pivad.data.synth import add_synth_arguments
    except ImportError as exc:  # the synth module is missing or broken: only this sub-verb is lost
        synth.set_defaults(_data_missing=f"'data synth' is not available in this build ({exc})")
    else:
        add_synth_arguments(synth)
        synth.set_defaults(_data_run=_run_synth)

    from pivad.cli import add_config_arguments

    check = sub.add_parser(
        "check",
        help="load a config's data and print a summary",
        description="Load the lists, features and modality store of a config and print a summary table.",
    )
    add_config_arguments(check, required=True)
    check.set_defaults(_data_run=run_check)

    index = sub.add_parser(
        "index",
        help="a dataset (lists, annotation, ground truth, config) from a folder or CSV of videos",
        description="Index VIDEOS (a folder normal/ + <Class>/, or a CSV video,label[,class][,split]) into DATA: "
        "lists of the I3D feature files `pivad extract rgb` will write, annotations.txt and gt.npy of the test "
        "videos, videos.csv and DATA/pivad.yaml (docs/own_videos.md).",
    )
    add_index_arguments(index)
    index.add_argument("--out", required=True, help="dataset folder to write")
    index.set_defaults(_data_run=run_index)


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``data index`` that ``pivad fit`` shares."""
    parser.add_argument("videos", metavar="VIDEOS", help="folder with normal/ and <Class>/ subfolders, or a CSV")
    parser.add_argument("--annotations", metavar="CSV", default=None,
                        help="anomalous intervals of test videos: video,start,end[,unit] (several rows per video)")
    parser.add_argument("--unit", choices=("s", "f"), default="s",
                        help="unit of the intervals without a unit column: s = seconds (default), f = frames")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="share of each class held out for testing when no split is given (default 0.25)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn test split (default 0)")
    parser.add_argument("--crops", type=int, choices=(10, 5, 1), default=10, help="I3D crops per snippet (default 10)")
    parser.add_argument("--name", default="", help="dataset name in run paths (default: the VIDEOS folder's name)")


def run(args: argparse.Namespace) -> int:
    missing = getattr(args, "_data_missing", None)
    if missing:
        print(f"pivad: error: {missing}", file=sys.stderr)
        return 2
    runner = getattr(args, "_data_run", None)
    if runner is None:
        print("pivad: error: 'pivad data' needs a sub-verb: gt, synth, index or check (see pivad data -h)", file=sys.stderr)
        return 2
    return runner(args)


def _run_synth(args: argparse.Namespace) -> int:
    from pivad.data.synth import run_synth

    return run_synth(args)


def _warn(message: str) -> None:
    print(f"pivad: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- gt


def snippet_count(files: list[Path], layout: str) -> int:
    """T of a video from its feature file header(s); all crops of a video must agree."""
    from pivad.data.features import read_header

    counts = []
    for f in files:
        shape, _ = read_header(f)
        if len(shape) < 1 or shape[0] == 0 or (layout == "per_crop" and len(shape) != 2):
            want = "[T,D]" if layout == "per_crop" else "[T,C,D] or [T,D]"
            raise DataError(f"{f}: expected shape {want} with T > 0, got [{','.join(map(str, shape))}]")
        counts.append(int(shape[0]))
    if len(set(counts)) > 1:
        detail = ", ".join(f"{f.name}: {t}" for f, t in zip(files, counts))
        raise DataError(f"{files[0].parent}: crops of one video differ in snippet count ({detail})")
    return counts[0]


def run_gt(args: argparse.Namespace) -> int:
    from pivad.data.annotations import parse_annotations
    from pivad.data.ground_truth import GT_RULE, GTSummary, build_frame_gt, check_coverage
    from pivad.data.lists import read_list
    from pivad.io import atomic_save_npy

    if args.snippet < 1:
        raise DataError(f"--snippet must be positive, got {args.snippet}")
    from pivad.outputs import check_output_file

    check_output_file(args.out)
    annotations = parse_annotations(args.annotation, args.fmt)
    items = read_list(args.list_path, root=args.root, layout=args.layout, label_rule=args.label_rule or args.fmt)
    for message in check_coverage([(it.name, it.label) for it in items], annotations, annotation_path=args.annotation):
        _warn(message)
    videos = [(it.name, snippet_count(it.files, args.layout)) for it in items]
    summary = GTSummary()
    gt = build_frame_gt(videos, annotations, args.snippet, summary=summary)
    atomic_save_npy(args.out, gt)

    n_abnormal = sum(it.label for it in items)
    share = 100.0 * summary.abnormal_frames / max(summary.frames, 1)
    print(f"rule: {GT_RULE.format(snippet=args.snippet)}")
    print(
        f"videos: {summary.videos} ({n_abnormal} abnormal, {summary.videos - n_abnormal} normal); "
        f"frames: {summary.frames:,}; abnormal frames: {summary.abnormal_frames:,} ({share:.2f}%)"
    )
    if summary.clipped_events:
        shown = "; ".join(summary.clipped_events[:3])
        more = f"; and {len(summary.clipped_events) - 3} more" if len(summary.clipped_events) > 3 else ""
        print(f"events past the feature length: {len(summary.clipped_events)} ({shown}{more})")
    print(f"wrote {args.out} (uint8 [{summary.frames}])")
    return 0


# ------------------------------------------------------------------------------------------- index


def run_index(args: argparse.Namespace) -> int:
    from pivad.data.index import index_videos

    out = Path(args.out)
    index = index_videos(args.videos, out, annotations=args.annotations, unit=args.unit,
                         test_fraction=args.test_fraction, seed=args.seed, crops=args.crops, name=args.name)
    for message in index.warnings:
        _warn(message)
    for split in ("train", "test"):
        videos = index.split(split)
        n_abnormal = sum(v.label for v in videos)
        minutes = sum(v.n_frames / v.fps for v in videos if v.fps > 0) / 60
        print(f"{split}: {len(videos)} videos ({len(videos) - n_abnormal} normal, {n_abnormal} abnormal), "
              f"{minutes:.1f} min")
    print(f"classes: {', '.join(index.classes)}")
    print(f"test intervals: {sum(len(e) for e in index.events.values())} in {len(index.events)} videos"
          if index.annotated else "test intervals: none (no --annotations: the test set cannot be evaluated)")
    print(f"wrote {out}/lists, {out}/videos.csv" + (f", {out}/annotations.txt, {out}/gt.npy" if index.annotated else "")
          + f" and {out}/pivad.yaml")
    return 0


# ------------------------------------------------------------------------------------------- check


def _split_row(label: str, dataset, layout: str) -> list[str]:
    """One row of the summary table: videos, normal/abnormal, crops, T range, modalities."""
    if dataset is None or not dataset.items:
        return [label, "0", "-", "-", "-", "-", "-"]
    items = dataset.items
    if getattr(dataset, "n_crops", None) is not None:  # a test set knows each video's T
        lengths = [int(t) for t in dataset.lengths]
        crops = int(dataset.n_crops) * len(items)
    else:  # a training set holds resampled crops: T from the file headers
        lengths = [snippet_count(it.files, layout) for it in items]
        crops = len(dataset)
    n_abnormal = sum(it.label for it in items)
    modalities = ",".join(dataset.modality_names) or "-"
    return [label, str(len(items)), str(len(items) - n_abnormal), str(n_abnormal), str(crops),
            f"{min(lengths)}-{max(lengths)}", modalities]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i in (0, len(r) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        .rstrip()
        for r in rows
    )


def _check_ground_truth(cfg, test) -> str:
    """A line about the test ground truth; DataError when it does not fit the test features."""
    import numpy as np

    from pivad.data.annotations import parse_annotations
    from pivad.data.ground_truth import GTSummary, build_frame_gt, check_coverage

    d = cfg.data
    if test is None:
        return "ground truth: no test set"
    need = 16 * int(np.sum(test.lengths))
    if d.gt:
        from pivad.data.ground_truth import read_gt_vector

        n = int(read_gt_vector(d.gt).shape[0])
        if n != need:
            raise DataError(f"{d.gt}: {n:,} frames, the test features need {need:,} (16 per snippet)")
        return f"ground truth: {d.gt} ({n:,} frames, matches the test features)"
    if not d.annotation:
        return "ground truth: none configured (set data.annotation or data.gt to evaluate)"
    annotations = parse_annotations(d.annotation, d.annotation_format)
    labelled = [(it.name, it.label) for it in test.items]
    for message in check_coverage(labelled, annotations, annotation_path=d.annotation):
        _warn(message)
    summary = GTSummary()
    build_frame_gt([(it.name, int(t)) for it, t in zip(test.items, test.lengths)], annotations, summary=summary)
    return (
        f"ground truth: {d.annotation} ({d.annotation_format}): {summary.frames:,} frames, "
        f"{summary.abnormal_frames:,} abnormal, {summary.annotated_videos} videos with events, "
        f"{len(summary.clipped_events)} event(s) past the feature length"
    )


def _warn_unknown_classes(cfg, bundle) -> None:
    """A warning per class a list names that is not among the dataset's classes (a typo, another rule)."""
    from pivad.data.labels import NORMAL, known_classes

    known = known_classes(cfg.data.label_rule, cfg.data.classes)
    if known is None:
        return
    for split, path in (("train", cfg.data.train_list), ("test", cfg.data.test_list)):
        sets = [bundle.train_normal, bundle.train_abnormal, bundle.val] if split == "train" else [bundle.test]
        seen: dict[str, str] = {}
        for item in (it for s in sets if s is not None for it in s.items):
            if item.cls != NORMAL and item.cls not in known:
                seen.setdefault(item.cls, item.name)
        for cls, video in seen.items():
            where = "data.classes" if cfg.data.classes else f"the {cfg.data.label_rule} classes"
            _warn(f"{path}: class '{cls}' (video {video}) is not one of {where} ({', '.join(sorted(known))})")


def run_check(args: argparse.Namespace) -> int:
    from pivad.cli import config_from_args
    from pivad.data.datasets import build_datasets

    cfg = config_from_args(args)
    bundle = build_datasets(cfg)
    _warn_unknown_classes(cfg, bundle)
    layout = cfg.data.layout
    rows = [["split", "videos", "normal", "abnormal", "crops", "T range", "modalities"]]
    rows.append(_split_row("train (normal)", bundle.train_normal, layout))
    rows.append(_split_row("train (abnormal)", bundle.train_abnormal, layout))
    rows.append(_split_row("validation", bundle.val, layout))
    rows.append(_split_row("test", bundle.test, layout))
    print(f"dataset: {cfg.data.name} ({layout}, feature dim {cfg.data.feature_dim})")
    print(_table(rows))
    print(f"modalities present: {', '.join(bundle.modalities_present) or 'none'}")
    print(f"classes: {', '.join(bundle.classes) or 'none'}")
    print(_check_ground_truth(cfg, bundle.test))
    return 0
