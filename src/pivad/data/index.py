"""A dataset from a folder (or CSV) of videos: ``pivad data index`` (docs/own_videos.md).

Sources:

- a folder ``VIDEOS/normal/*`` (normal videos, any case of ``normal``) and ``VIDEOS/<Class>/*`` (one
  folder per anomaly class); video files directly in ``VIDEOS`` are refused (no label);
- a CSV with a header ``video,label[,class][,split]``: ``video`` a path (relative to the CSV),
  ``label`` ``normal``/``0`` or ``abnormal``/``anomaly``/``1``, ``class`` the anomaly class (default
  ``Anomaly``), ``split`` ``train`` or ``test`` (then on every row).

Test annotations (optional): a CSV ``video,start,end[,unit]``, one anomalous interval per row and any
number of rows per video; ``video`` is the file name or stem, ``unit`` is ``s`` (seconds: the interval
``[start, end)``) or ``f`` (frames, 0-based, both ends inclusive), default the ``unit`` argument.

Without a ``split`` column the test split is drawn by seed: ``round(test_fraction * n)`` videos of
each class (at least one, never all), the abnormal ones among the annotated videos of the class when
an annotation file is given (an annotated video not drawn trains, its intervals unused).

Video ids are file stems and must be unique; they key the feature files, the annotation and the
modality store. Frame counts come from each file's header (its packets when the header has none) and
the first frame is decoded, so an unreadable or empty video is found here rather than hours later.
Every problem is a :class:`~pivad.errors.DataError` naming the file (and line).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pivad.config import check_seed
from pivad.data.labels import NORMAL
from pivad.errors import DataError, PivadError
from pivad.io import not_regular, read_text_file

SNIPPET = 16
SPLITS = ("train", "test")
NORMAL_FOLDER = "normal"
_NORMAL_LABELS = {"0": 0, "normal": 0, "1": 1, "abnormal": 1, "anomaly": 1, "anomalous": 1}
_UNITS = {"s": "s", "sec": "s", "seconds": "s", "second": "s", "f": "f", "frame": "f", "frames": "f"}
_BAD_NAME = re.compile(r"\s|__\d+$")  # whitespace splits annotation lines; __<n> reads as a crop suffix


@dataclass(frozen=True)
class Entry:
    """A video as the source names it, before probing."""

    path: Path
    label: int  # 1 = abnormal
    cls: str  # NORMAL for normal videos
    split: str | None  # train | test | None (drawn by seed)
    where: str  # file[:line] that named it, for messages


@dataclass(frozen=True)
class IndexedVideo:
    name: str  # video id: the file stem
    path: Path  # absolute
    label: int
    cls: str
    split: str
    fps: float
    n_frames: int

    @property
    def snippets(self) -> int:
        """T of its features: 16-frame snippets, the last one padded (``pivad extract rgb``)."""
        return math.ceil(self.n_frames / SNIPPET)

    @property
    def folder(self) -> str:
        """Its folder under the feature root (the ``folder`` label rule reads label and class from it)."""
        return NORMAL_FOLDER if self.label == 0 else self.cls


@dataclass
class DatasetIndex:
    videos: list[IndexedVideo]
    events: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # test video -> inclusive frames
    annotated: bool = False  # an annotation file was given (the test set can be evaluated)
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[IndexedVideo]:
        return [v for v in self.videos if v.split == name]

    @property
    def classes(self) -> list[str]:
        return sorted({v.cls for v in self.videos if v.label == 1})


# ---------------------------------------------------------------------------------------- sources


def _video_files(folder: Path) -> list[Path]:
    from pivad.extract.rgb import VIDEO_SUFFIXES

    # not only regular files: a dangling link, FIFO or device named like a video is refused when probed, not skipped
    return sorted(f for f in folder.iterdir() if not f.is_dir() and f.suffix.lower() in VIDEO_SUFFIXES)


def scan_folder(root: Path) -> list[Entry]:
    """``root/normal/*`` and ``root/<Class>/*`` video files (sorted; one level)."""
    loose = _video_files(root)
    if loose:
        raise DataError(f"{loose[0]}: video directly in {root}; put it in {root}/normal/ or {root}/<Class>/")
    entries: list[Entry] = []
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not any(d.name.lower() == NORMAL_FOLDER for d in folders):
        raise DataError(f"{root}: no normal/ folder (normal videos go in {root}/normal/, anomalies in {root}/<Class>/)")
    for d in folders:
        files = _video_files(d)
        if not files:
            raise DataError(f"{d}: class folder with no videos")
        normal = d.name.lower() == NORMAL_FOLDER
        if not normal:
            _check_class(d.name, str(d))
        entries += [Entry(f.resolve(), 0 if normal else 1, NORMAL if normal else d.name, None, str(f)) for f in files]
    return entries


def _is_utf8(text: str) -> bool:
    """False for a name read from bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_class(cls: str, where: str) -> None:
    if not cls or re.search(r"[\s/\\]", cls) or cls.lower() == NORMAL_FOLDER:
        raise DataError(f"{where}: class {cls!r} must be a non-empty name without spaces or slashes, not 'normal'")


def _read_csv(path: Path, required: tuple[str, ...], optional: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a headed CSV as ``(line, {column: value})``; the header must hold ``required``."""
    text = read_text_file(path, "CSV file", encoding="utf-8-sig")
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), start=1)
            if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise DataError(f"{path}: empty CSV (expected a header {','.join(required)}[,{',,'.join(optional)}])")
    header = [c.strip().lower() for c in rows[0][1]]
    missing = [c for c in required if c not in header]
    unknown = [c for c in header if c not in required + optional]
    if missing or unknown:
        problem = f"missing column(s) {', '.join(missing)}" if missing else f"unknown column(s) {', '.join(unknown)}"
        raise DataError(f"{path}:{rows[0][0]}: header {','.join(header)}: {problem} "
                        f"(expected {','.join(required)}[,{','.join(optional)}])")
    out = []
    for n, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(f"{path}:{n}: {len(row)} field(s), the header has {len(header)}")
        out.append((n, {h: c.strip() for h, c in zip(header, row)}))
    if not out:
        raise DataError(f"{path}: no rows after the header")
    return out


def read_video_csv(path: Path) -> list[Entry]:
    """Entries of a ``video,label[,class][,split]`` CSV."""
    rows = _read_csv(path, ("video", "label"), ("class", "split"))
    has_split = "split" in rows[0][1]
    entries = []
    for n, row in rows:
        where = f"{path}:{n}"
        label = _NORMAL_LABELS.get(row["label"].lower())
        if label is None:
            raise DataError(f"{where}: label {row['label']!r} must be normal/0 or abnormal/1")
        cls = row.get("class") or ("Anomaly" if label else NORMAL)
        if label == 0:
            cls = NORMAL
        else:
            _check_class(cls, where)
        split = None
        if has_split:
            split = row["split"].lower()
            if split not in SPLITS:
                raise DataError(f"{where}: split {row['split']!r} must be train or test")
        video = Path(row["video"])
        if not row["video"]:
            raise DataError(f"{where}: empty video path")
        video = video if video.is_absolute() else path.parent / video
        entries.append(Entry(video.resolve(), label, cls, split, where))
    return entries


def read_intervals(path: Path, unit: str = "s") -> dict[str, list[tuple[float, float, str, str]]]:
    """``{video id: [(start, end, unit, where), ...]}`` from a ``video,start,end[,unit]`` CSV."""
    from pivad.data.annotations import video_id

    rows = _read_csv(path, ("video", "start", "end"), ("unit",))
    out: dict[str, list[tuple[float, float, str, str]]] = {}
    for n, row in rows:
        where = f"{path}:{n}"
        u = _UNITS.get((row.get("unit") or unit).lower())
        if u is None:
            raise DataError(f"{where}: unit {row.get('unit')!r} must be s (seconds) or f (frames)")
        try:
            start, end = float(row["start"]), float(row["end"])
        except ValueError:
            raise DataError(f"{where}: start and end must be numbers, got {row['start']!r}, {row['end']!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)):
            raise DataError(f"{where}: start and end must be finite")
        if u == "f" and not (start.is_integer() and end.is_integer()):
            raise DataError(f"{where}: frame indices must be integers, got {row['start']}, {row['end']}")
        out.setdefault(video_id(row["video"]), []).append((start, end, u, where))
    return out


def to_frames(start: float, end: float, unit: str, video: IndexedVideo, where: str) -> tuple[int, int]:
    """An interval as inclusive frame indices of ``video``; DataError when it is empty or outside it."""
    n = video.n_frames
    if unit == "f":
        s, e = int(start), int(end)
        if s < 0 or e < s or e >= n:
            raise DataError(f"{where}: frames {s}-{e} outside {video.path.name} (frames 0-{n - 1}) or end before start")
        return s, e
    if video.fps <= 0:
        raise DataError(f"{where}: {video.path.name} has no frame rate; give this interval in frames (unit f)")
    duration = n / video.fps
    if start < 0 or end <= start or end > duration + 1.0 / video.fps:
        raise DataError(f"{where}: interval {start:g}-{end:g} s outside {video.path.name} (0-{duration:.3f} s) "
                        "or end not after start")
    s = int(math.floor(start * video.fps + 1e-9))
    e = max(s, min(n - 1, int(math.ceil(end * video.fps - 1e-9)) - 1))
    return s, e


# ---------------------------------------------------------------------------------------- probing


def probe_entry(entry: Entry) -> tuple[float, int]:
    """(fps, frames) of a video; DataError when it is missing, unreadable or has no frame."""
    from pivad.video.decode import iter_frames, probe

    if not entry.path.is_file():
        raise DataError(f"{entry.path}: {not_regular(entry.path) or 'video not found'}" + (f" (named in {entry.where})" if entry.where != str(entry.path) else ""))
    try:
        info = probe(entry.path)
        frames = iter_frames(entry.path)
        try:
            next(frames)
        finally:
            frames.close()
    except StopIteration:
        raise DataError(f"{entry.path}: zero-frame video") from None
    except PivadError as exc:
        raise DataError(str(exc) if str(entry.path) in str(exc) else f"{entry.path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise their own types
        raise DataError(f"{entry.path}: unreadable video ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
    if info.n_frames <= 0:
        raise DataError(f"{entry.path}: zero-frame video (its header and stream hold no frame)")
    return info.fps, info.n_frames


# ------------------------------------------------------------------------------------------ split


def draw_test(names_by_class: dict[str, list[str]], candidates: dict[str, list[str]], fraction: float,
              seed: int) -> set[str]:
    """Test videos: per class ``round(fraction * n)`` (at least one, never all) among its candidates."""
    chosen: set[str] = set()
    for k, cls in enumerate(sorted(names_by_class)):
        members, pool = names_by_class[cls], candidates.get(cls, [])
        n_test = min(max(1, int(round(fraction * len(members)))), len(members) - 1, len(pool))
        if n_test <= 0:
            continue
        order = np.random.default_rng([seed, k]).permutation(len(pool))[:n_test]
        chosen.update(pool[i] for i in order)
    return chosen


def check_split_args(test_fraction: float, seed: int) -> None:
    """``--test-fraction`` in (0, 1) and ``--seed`` in numpy's range, or a one-line error naming the flag."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"--test-fraction {test_fraction}: must be in (0, 1)")
    check_seed(seed, "--seed")


def build_index(source: str | Path, annotations: str | Path | None = None, *, unit: str = "s",
                test_fraction: float = 0.25, seed: int = 0) -> DatasetIndex:
    """Read, probe and split the videos of ``source`` (folder or CSV); intervals of ``annotations``."""
    source = Path(source)
    check_split_args(test_fraction, seed)
    if source.is_dir():
        entries = scan_folder(source)
    elif source.is_file():
        entries = read_video_csv(source)
    else:
        raise DataError(f"{source}: {not_regular(source) or 'no such folder or CSV file'}")
    seen: dict[str, Entry] = {}
    for e in entries:
        name = e.path.stem
        if name in seen:
            raise DataError(f"{e.where}: duplicate video name {name!r} (also {seen[name].where}); names key the features")
        if not _is_utf8(str(e.path)):
            raise DataError(f"{e.where}: the video's path is not UTF-8 text; rename it (the lists and YAML hold it)")
        if _BAD_NAME.search(name):
            raise DataError(f"{e.where}: video name {name!r} must not contain spaces or end in __<number>")
        seen[name] = e
    probed = {name: probe_entry(e) for name, e in seen.items()}
    intervals = read_intervals(Path(annotations), unit) if annotations else {}
    warnings: list[str] = []
    for name, rows in intervals.items():
        if name not in seen:
            raise DataError(f"{rows[0][3]}: video {name!r} is not among the indexed videos")
        if seen[name].label == 0:
            raise DataError(f"{rows[0][3]}: video {name!r} is normal; anomalous intervals belong to abnormal videos")

    explicit = [e.split is not None for e in seen.values()]
    if all(explicit):
        test = {n for n, e in seen.items() if e.split == "test"}
    else:
        by_class: dict[str, list[str]] = {}
        for n, e in seen.items():
            by_class.setdefault(e.cls, []).append(n)
        pool = {c: [n for n in ns if c == NORMAL or not annotations or n in intervals] for c, ns in by_class.items()}
        test = draw_test(by_class, pool, test_fraction, seed)
    videos = [IndexedVideo(n, e.path, e.label, e.cls, "test" if n in test else "train", *probed[n])
              for n, e in seen.items()]
    where = str(source)
    for split, label, what in (("train", 0, "normal training"), ("train", 1, "abnormal training"),
                               ("test", 0, "normal test"), ("test", 1, "abnormal test")):
        if not any(v.split == split and v.label == label for v in videos):
            raise DataError(f"{where}: empty split: no {what} videos")
    events: dict[str, list[tuple[int, int]]] = {}
    by_name = {v.name: v for v in videos}
    for name, rows in intervals.items():
        v = by_name[name]
        frames = [to_frames(s, e, u, v, w) for s, e, u, w in rows]
        if v.split == "test":
            events[name] = sorted(frames)
        else:
            warnings.append(f"{rows[0][3]}: {name} is a training video; its intervals are not used")
    if annotations:
        unannotated = [v for v in videos if v.split == "test" and v.label == 1 and v.name not in events]
        if unannotated:
            raise DataError(f"{annotations}: abnormal test video {unannotated[0].name} ({unannotated[0].path}) "
                            "has no interval; annotate it or move it to the training split")
    return DatasetIndex(videos, events, bool(annotations), warnings)


# ----------------------------------------------------------------------------------------- writing


def crop_entries(video: IndexedVideo, crops: int, feature_dir: str = "rgb") -> list[str]:
    """List lines of a video's crop files: ``rgb/<folder>/<video>__<c>.npy``."""
    return [f"{feature_dir}/{video.folder}/{video.name}__{c}.npy" for c in range(crops)]


def annotation_text(index: DatasetIndex) -> str:
    """The test videos in UCF-Crime's annotation form (``pivad.data.annotations``, format ucf)."""
    lines = []
    for v in index.split("test"):
        pairs = [x for s, e in index.events.get(v.name, []) for x in (s, e)] or [-1, -1]
        lines.append(f"{v.folder}/{v.name}.mp4 {v.n_frames} {v.cls} {' '.join(map(str, pairs))}")
    return "".join(line + "\n" for line in lines)


def data_config(index: DatasetIndex, out: Path, name: str, crops: int) -> dict:
    """The ``data`` section of ``out/pivad.yaml`` (absolute paths)."""
    out = out.resolve()
    return {
        "name": name,
        "root": str(out),
        "train_list": str(out / "lists" / "train.list"),
        "test_list": str(out / "lists" / "test.list"),
        "annotation": str(out / "annotations.txt") if index.annotated else "",
        "annotation_format": "ucf",
        "gt": "",  # built from the annotation and the feature lengths when evaluating
        "layout": "per_crop",
        "num_crops": crops,
        "feature_dim": 1024,
        "label_rule": "folder",
        "classes": index.classes,
        "modality_root": "",
        "modalities": [],
    }


def write_index(index: DatasetIndex, out: str | Path, *, crops: int, name: str, training: dict) -> dict[str, Path]:
    """Write lists, videos.csv, annotation, ground truth and ``pivad.yaml`` (last) atomically under ``out``.

    ``training`` holds the config's other sections (model, inductor, loss, train, eval) and data keys
    that size training. Returns the written paths by role."""
    from pivad.config import from_dict, merge_dict, save_config
    from pivad.data.ground_truth import build_frame_gt
    from pivad.data.annotations import Annotation
    from pivad.io import atomic_save_npy, atomic_write_text

    out = Path(out)
    paths = {"train_list": out / "lists" / "train.list", "test_list": out / "lists" / "test.list",
             "videos": out / "videos.csv", "config": out / "pivad.yaml"}
    for split in SPLITS:
        lines = [line for v in index.split(split) for line in crop_entries(v, crops)]
        atomic_write_text(paths[f"{split}_list"], "".join(line + "\n" for line in lines))
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["video", "path", "label", "class", "split", "fps", "frames", "snippets"])
    writer.writerows([v.name, v.path, v.label, v.cls, v.split, repr(v.fps), v.n_frames, v.snippets] for v in index.videos)
    atomic_write_text(paths["videos"], table.getvalue())
    if index.annotated:
        paths["annotation"] = out / "annotations.txt"
        paths["gt"] = out / "gt.npy"
        atomic_write_text(paths["annotation"], annotation_text(index))
        anns = {n: Annotation(ev) for n, ev in index.events.items()}
        atomic_save_npy(paths["gt"], build_frame_gt([(v.name, v.snippets) for v in index.split("test")], anns))
    cfg = from_dict(merge_dict(training, {"data": data_config(index, out, name, crops)}))  # validates every key
    save_config(cfg, paths["config"])
    return paths


def dataset_name(source: str | Path, name: str = "") -> str:
    """``name``, or the source folder's (CSV's) name, reduced to characters safe in run paths."""
    raw = name or Path(source).resolve().stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._") or "videos"


def index_videos(source: str | Path, out: str | Path, *, annotations: str | Path | None = None, unit: str = "s",
                 test_fraction: float = 0.25, seed: int = 0, crops: int = 10, name: str = "") -> DatasetIndex:
    """``pivad data index``: :func:`build_index` of ``source``, then :func:`write_index` into ``out``
    with the small-dataset :func:`training_sections`."""
    from pivad.outputs import check_output_dir

    check_output_dir(out)
    index = build_index(source, annotations, unit=unit, test_fraction=test_fraction, seed=seed)
    write_index(index, out, crops=crops, name=dataset_name(source, name), training=training_sections(index, crops))
    return index


def training_sections(index: DatasetIndex, crops: int, seed: int = 2022) -> dict:
    """Config sections for a small dataset: ``configs/demo.yaml``'s model and schedule (minutes on a CPU),
    with the batch, resampling and validation sized to the training videos of ``index``."""
    from pivad.config import read_yaml

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    sections = {k: v for k, v in read_yaml(demo).items() if k != "data"}
    counts = [sum(1 for v in index.split("train") if v.label == label) for label in (0, 1)]
    val_fraction = 0.2 if min(counts) >= 3 else 0.0  # a validation set needs videos of both labels to spare
    kept = [n - (max(1, round(val_fraction * n)) if val_fraction else 0) for n in counts]
    longest = max(v.snippets for v in index.split("train"))
    sections["data"] = {
        "num_segments": int(min(64, max(8, longest))),
        "batch_normal": int(min(16, kept[0] * crops)),
        "batch_abnormal": int(min(16, kept[1] * crops)),
        "val_fraction": val_fraction,
    }
    sections["train"] = {**sections.get("train", {}), "seed": seed, "threads": 0}
    sections["eval"] = {**sections.get("eval", {}), "batch_crops": crops}
    return sections


def read_videos_csv(path: str | Path) -> list[IndexedVideo]:
    """The videos of an index's ``videos.csv`` (written by :func:`write_index`)."""
    path = Path(path)
    rows = _read_csv(path, ("video", "path", "label", "class", "split", "fps", "frames", "snippets"), ())
    try:
        return [IndexedVideo(r["video"], Path(r["path"]), int(r["label"]), r["class"], r["split"], float(r["fps"]),
                             int(r["frames"])) for _, r in rows]
    except ValueError as exc:
        raise DataError(f"{path}: malformed index ({exc}); run pivad data index again") from None
