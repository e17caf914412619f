"""Temporal annotations of test videos: which frames are abnormal.

Three text formats, one annotated video per line, whitespace-separated, frame indices 0-based with
both ends inclusive (frames ``s..e`` are abnormal):

- ``ucf`` (UCF-Crime, as UR-DMU and RTFM ship it):
  ``<Class>/<video>.mp4 <n_frames> <Class> s1 e1 s2 e2`` with ``-1 -1`` for "no event";
  normal test videos have a line too (class ``Normal``, all ``-1``). Any even number of indices is
  accepted (not only two events).
- ``xd`` (XD-Violence): ``<video> s1 e1 [s2 e2 ...]``; only violent videos have a line.
- ``msad``: the MSAD authors publish a precomputed frame-level ground truth (``gt-MSAD-WS.npy``) with
  their lists, not an annotation text we could read, so ``msad`` is a documented generic form:
  ``<video> [<Class>] s1 e1 [s2 e2 ...]`` -- an optional class token (anything that is not an
  integer) after the name, then pairs; ``-1 -1`` pairs are ignored. It also reads LAVAD-style
  ``<video>.mp4 <Class> s1 e1 ...`` files. A precomputed ``.npy`` is used through ``data.gt``.

Keys are video ids in the form of :class:`pivad.data.lists.VideoItem` names (see :func:`video_id`):
``Abuse/Abuse028_x264.mp4`` and ``dataset/Abuse/Abuse028_x264__0.npy`` both give ``Abuse028_x264``.
A malformed line raises :class:`~pivad.errors.DataError` naming the file and the line number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from pivad.errors import ConfigError, DataError
from pivad.io import read_text_file

FORMATS = ("ucf", "xd", "msad")

# Extensions stripped from names; anything else after a dot is part of the name (XD ids contain dots:
# "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6").
_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".npy", ".npz")
_CROP_SUFFIX = re.compile(r"__\d+$")  # "<video>__<c>" per-crop feature files


@dataclass(frozen=True)
class Annotation:
    """One annotated video: abnormal frame ranges ``(s, e)``, both inclusive."""

    events: list[tuple[int, int]] = field(default_factory=list)
    n_frames: int | None = None  # frame count stated by the file (UCF only)
    cls: str | None = None  # class stated by the file (UCF, optional in msad)
    where: str = field(default="", compare=False)  # "<file>:<line>" it was read from, for errors about its events

    @property
    def abnormal(self) -> bool:
        return bool(self.events)


def video_id(token: str) -> str:
    """The video id of a path or name: basename, no video/feature extension, no ``__<c>`` crop suffix."""
    name = re.split(r"[\\/]", token.strip())[-1]
    lower = name.lower()
    for ext in _EXTENSIONS:
        if lower.endswith(ext):
            name = name[: -len(ext)]
            break
    return _CROP_SUFFIX.sub("", name)


def parse_annotations(path: str | Path, fmt: str = "ucf") -> dict[str, Annotation]:
    """Read an annotation file into ``{video_id: Annotation}`` (file order kept)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown annotation format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    path = Path(path)
    text = read_text_file(path, "annotation file")

    parse_line = {"ucf": _parse_ucf, "xd": _parse_xd, "msad": _parse_generic}[fmt]
    out: dict[str, Annotation] = {}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        where = f"{path}:{lineno}"
        name, ann = parse_line(tokens, where)
        if not name:
            raise DataError(f"{where}: empty video name")
        if name in out:
            raise DataError(f"{where}: video {name!r} is annotated twice (first on line {first_line[name]})")
        out[name] = replace(ann, where=where)
        first_line[name] = lineno
    return out


# ------------------------------------------------------------------------------------------- formats


def _int(token: str, where: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataError(f"{where}: {what} must be an integer, got {token!r}") from None


def _events(tokens: list[str], where: str) -> list[tuple[int, int]]:
    """Pairs ``s e`` -> inclusive ranges; ``-1 -1`` pairs mean "no event" and are dropped."""
    if len(tokens) % 2:
        raise DataError(f"{where}: expected start/end pairs, got an odd number of frame indices ({len(tokens)})")
    events = []
    for i in range(0, len(tokens), 2):
        s = _int(tokens[i], where, "event start")
        e = _int(tokens[i + 1], where, "event end")
        if s == -1 and e == -1:
            continue
        if s < 0 or e < 0:
            raise DataError(f"{where}: event {s} {e}: frame indices must be >= 0 (or -1 -1 for none)")
        if e < s:
            raise DataError(f"{where}: event {s} {e}: end before start")
        events.append((s, e))
    return events


def _parse_ucf(tokens: list[str], where: str) -> tuple[str, Annotation]:
    if len(tokens) < 3:
        raise DataError(
            f"{where}: expected '<Class>/<video>.mp4 <n_frames> <Class> s1 e1 ...', got {len(tokens)} field(s)"
        )
    n_frames = _int(tokens[1], where, "frame count")
    if n_frames < 0:
        raise DataError(f"{where}: frame count must be >= 0, got {n_frames}")
    return video_id(tokens[0]), Annotation(_events(tokens[3:], where), n_frames, tokens[2])


def _parse_xd(tokens: list[str], where: str) -> tuple[str, Annotation]:
    return video_id(tokens[0]), Annotation(_events(tokens[1:], where))


def _parse_generic(tokens: list[str], where: str) -> tuple[str, Annotation]:
    rest = tokens[1:]
    cls = None
    if rest and not re.fullmatch(r"[+-]?\d+", rest[0]):
        cls, rest = rest[0], rest[1:]
    return video_id(tokens[0]), Annotation(_events(rest, where), None, cls)
