"""Feature list files: one feature file per line, grouped into videos.

Layouts (``data.layout``):

- ``per_crop`` (UR-DMU): one ``[T, D]`` file per crop, named ``<video>__<c>.npy``; the crops of a video
  are on consecutive lines and become one :class:`VideoItem` with several ``files``. A name without a
  ``__<c>`` suffix is a video with a single crop.
- ``per_video`` (RTFM, MSAD): one file per video, ``[T, C, D]`` (C crops) or ``[T, D]``.

Paths: ``/`` and ``\\`` both separate folders; a drive letter (``E:/...``) or ``\\\\host\\share``
marks a Windows absolute path. An absolute path whose folder exists here is used as is. Every other
entry is placed under a *base* folder: ``root`` if given; else the list file's folder or, second
choice, that folder's parent (lists often sit in ``<dataset>/lists/`` beside the feature folders).
The entry's folder part is cut to the longest tail that exists as a folder under a base (longer tails
first, the first base first at equal length) and the file is looked for there; when no tail exists,
directly in the first base. So ``E:/DLCode/datasets/ECCV2020XD-Violence/i3d-features/RGBTest/x__0.npy``
with ``root=/data/xd`` resolves to ``/data/xd/i3d-features/RGBTest/x__0.npy`` if that folder exists,
else ``/data/xd/RGBTest/x__0.npy``, ..., else ``/data/xd/x__0.npy``. The choice is made once per
listed folder, so a list of 20,000 lines costs a few ``stat`` calls.

Labels come from names through a label rule (:mod:`pivad.data.labels`), never from line positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pivad.data import labels as _labels
from pivad.data.labels import NORMAL, LabelError
from pivad.errors import ConfigError, DataError
from pivad.io import not_regular, read_text_file

LAYOUTS = ("per_crop", "per_video")

_CROP_SUFFIX = re.compile(r"^(?P<video>.+)__(?P<crop>\d+)$")
_FEATURE_TAG = re.compile(r"_(i3d|swin)$")  # MSAD lists name files <video>_i3d.npy
_WINDOWS_ABS = re.compile(r"^(?:[A-Za-z]:/|//)")


@dataclass
class VideoItem:
    """One video of a list: its id, its feature file(s) in crop order, label (1 = abnormal) and class."""

    name: str
    files: list[Path] = field(default_factory=list)
    label: int = 0
    cls: str = NORMAL


def _split_entry(entry: str) -> tuple[bool, list[str], str]:
    """``entry`` -> (is_absolute, folder parts without drive/host, file name)."""
    text = entry.replace("\\", "/")
    windows = bool(_WINDOWS_ABS.match(text))
    absolute = windows or text.startswith("/")
    if windows and text.startswith("//"):  # //host/share/...: drop host and share
        parts = [p for p in text[2:].split("/") if p][2:]
    elif windows:  # E:/...: drop the drive
        parts = [p for p in text[2:].split("/") if p]
    else:
        parts = [p for p in text.split("/") if p and p != "."]
    if not parts:
        return absolute, [], ""
    return absolute, parts[:-1], parts[-1]


class PathResolver:
    """Maps list entries to files on this machine (rule in the module docstring), one probe per folder."""

    def __init__(self, *bases: Path):
        self.bases = bases
        self._cache: dict[str, Path] = {}  # listed folder text -> folder here

    def resolve(self, entry: str) -> Path:
        """The file an entry names (it need not exist)."""
        text = entry.replace("\\", "/")
        folder_text = text.rsplit("/", 1)[0] if "/" in text else ""
        if folder_text not in self._cache:
            absolute, parts, _ = _split_entry(text)
            self._cache[folder_text] = self._probe(absolute, parts, folder_text)
        return self._cache[folder_text] / text.rsplit("/", 1)[-1]

    def _probe(self, absolute: bool, parts: list[str], folder_text: str) -> Path:
        if absolute:  # absolute on this OS (E:/... is not, on POSIX) and present here: used as is
            native = Path(folder_text or "/")
            if native.is_absolute() and native.is_dir():
                return native
        for start in range(len(parts)):
            for base in self.bases:
                candidate = base.joinpath(*parts[start:])
                if candidate.is_dir():
                    return candidate
        return self.bases[0]


def _video_name(stem: str, layout: str, rule: str) -> tuple[str, int | None]:
    crop = None
    if layout == "per_crop":
        match = _CROP_SUFFIX.match(stem)
        if match:
            stem, crop = match.group("video"), int(match.group("crop"))
    if rule == "msad":
        stem = _FEATURE_TAG.sub("", stem)
    return stem, crop


def read_list(
    path: str | Path,
    *,
    root: str | Path = "",
    layout: str = "per_crop",
    label_rule: str = "ucf",  # noqa: A002 - the config field's name
    check_files: bool = True,
) -> list[VideoItem]:
    """Read a list file into videos (see the module docstring for layouts, paths and labels).

    Blank lines and lines starting with ``#`` are skipped. ``check_files`` checks that every listed
    file exists (one ``stat`` per line). Raises DataError naming the list (and line) for an unreadable
    or empty list, a non-``.npy`` entry, crops of a video on non-consecutive lines, a repeated crop,
    a name the label rule cannot label, and a listed file that does not exist.
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise ConfigError(f"data.layout: unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    labeller = _labels.label_rule(label_rule)
    text = read_text_file(path, "list file", encoding="utf-8-sig")
    folder = path.resolve().parent
    resolver = PathResolver(Path(root)) if str(root) else PathResolver(folder, folder.parent)

    items: list[VideoItem] = []
    first_line: dict[str, int] = {}  # video name -> line of its first entry
    crops_seen: set[int | None] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"{path}: line {number}"
        absolute, parts, filename = _split_entry(entry)
        if not filename.lower().endswith(".npy"):
            raise DataError(f"{where}: expected a .npy feature file, got {entry!r}")
        name, crop = _video_name(filename[: -len(".npy")], layout, label_rule)
        file = resolver.resolve(entry)
        if check_files and not file.is_file():
            why = not_regular(file)
            if why:
                raise DataError(f"{file}: {why} (listed in {where} as {entry!r})")
            hint = "; set data.root to the folder that holds the features" if absolute else ""
            raise DataError(f"{file}: feature file not found (listed in {where} as {entry!r}){hint}")
        if layout == "per_crop" and items and items[-1].name == name:
            if crop in crops_seen:
                raise DataError(f"{where}: crop {crop} of video {name} is listed twice")
            crops_seen.add(crop)
            items[-1].files.append(file)
            continue
        if name in first_line:
            raise DataError(
                f"{where}: video {name} was already listed at line {first_line[name]}"
                + ("; the crops of a video must be on consecutive lines" if layout == "per_crop" else "")
            )
        try:
            label, cls = labeller(name, parts[-1] if parts else "")
        except LabelError as exc:
            raise DataError(f"{where}: {exc}") from None
        first_line[name] = number
        crops_seen = {crop}
        items.append(VideoItem(name=name, files=[file], label=label, cls=cls))
    if not items:
        raise DataError(f"{path}: the list has no entries")
    return items


def class_names(items: list[VideoItem]) -> list[str]:
    """The anomaly classes present in ``items`` (abnormal videos only), sorted."""
    return sorted({item.cls for item in items if item.label == 1})


def count_labels(items: list[VideoItem]) -> tuple[int, int]:
    """(normal videos, abnormal videos)."""
    abnormal = sum(item.label for item in items)
    return len(items) - abnormal, abnormal
