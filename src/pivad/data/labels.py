"""Video labels and classes derived from file names (never from line positions in a list).

A label rule maps a video name (the feature file's stem without crop suffix) and the folder the list
names it under to ``(label, cls)``: ``label`` 1 = abnormal, 0 = normal; ``cls`` the anomaly class,
``"Normal"`` for normal videos.

Rules (``data.label_rule``):

- ``ucf``: normal iff ``"Normal"`` is in the name (UR-DMU's rule); class = the leading letters of the
  name (``RoadAccidents021_x264`` -> ``RoadAccidents``).
- ``xd``: normal iff ``"_label_A"`` is in the name; class = the first label code after ``_label_``
  (``..._label_B2-G-0`` -> ``B2`` -> ``Shooting``), named by XD-Violence's code table.
- ``msad``: normal iff ``"normal"`` is in the name, any case (MSAD names its normal videos
  ``MSAD_normal_<scene><n>``); class = the name without its trailing ``_<number>``
  (``Traffic_accident_12`` -> ``Traffic_accident``).
- ``folder``: the folder the file is listed under: ``normal`` (any case) is normal, any other folder
  names the anomaly class (``rgb/Fighting/cam3__0.npy`` -> ``Fighting``); the layout
  ``pivad data index`` writes.
- ``regex:<pattern>``: normal iff ``re.search(pattern, name)`` matches; class = the folder the file is
  listed under, or ``"Anomaly"`` when the entry has no folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pivad.errors import ConfigError

NORMAL = "Normal"

# UCF-Crime's 13 anomaly classes (the ``ucf`` rule's class names when data.classes is not set).
UCF_CLASSES = ("Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents",
               "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism")

# XD-Violence label codes (A = normal); a video lists up to three codes, the first is the main class.
XD_CLASSES = {
    "A": NORMAL,
    "B1": "Fighting",
    "B2": "Shooting",
    "B4": "Riot",
    "B5": "Abuse",
    "B6": "Car accident",
    "G": "Explosion",
}

LABEL_RULES = ("ucf", "xd", "msad", "folder", "regex:<pattern>")

LabelFn = Callable[[str, str], tuple[int, str]]


class LabelError(ValueError):
    """A name the rule cannot label; :func:`pivad.data.lists.read_list` turns it into a DataError."""


def _ucf(name: str, folder: str) -> tuple[int, str]:
    if "Normal" in name:
        return 0, NORMAL
    match = re.match(r"[A-Za-z]+", name)
    return 1, match.group(0) if match else name


def _xd(name: str, folder: str) -> tuple[int, str]:
    match = re.search(r"_label_([A-Za-z0-9]+)", name)
    if match is None:
        raise LabelError(f"'{name}' has no _label_<code> part (label_rule xd)")
    if "_label_A" in name:
        return 0, NORMAL
    code = match.group(1)
    return 1, XD_CLASSES.get(code, code)


def _msad(name: str, folder: str) -> tuple[int, str]:
    if "normal" in name.lower():
        return 0, NORMAL
    return 1, re.sub(r"_\d+$", "", name)


def _folder(name: str, folder: str) -> tuple[int, str]:
    if folder in ("", "."):
        raise LabelError(f"'{name}' is listed under no folder (label_rule folder reads normal/ or <Class>/)")
    if folder.lower() == "normal":
        return 0, NORMAL
    return 1, folder


def _regex(pattern: str) -> LabelFn:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"data.label_rule: invalid regular expression {pattern!r} ({exc})") from None

    def rule(name: str, folder: str) -> tuple[int, str]:
        if compiled.search(name):
            return 0, NORMAL
        return 1, folder if folder not in ("", ".") else "Anomaly"

    return rule


def label_rule(rule: str) -> LabelFn:
    """The labelling function of a ``data.label_rule`` value (ConfigError for an unknown rule)."""
    if rule.startswith("regex:"):
        return _regex(rule[len("regex:") :])
    rules = {"ucf": _ucf, "xd": _xd, "msad": _msad, "folder": _folder}
    if rule not in rules:
        raise ConfigError(f"data.label_rule: unknown rule {rule!r} (known: {', '.join(LABEL_RULES)})")
    return rules[rule]


def known_classes(rule: str, configured: list[str] | tuple[str, ...] = ()) -> set[str] | None:
    """The anomaly classes a list may name: ``data.classes`` when set, else the dataset's own (ucf, xd);
    None when there is no fixed set (msad, regex rules without data.classes)."""
    if configured:
        return set(configured)
    if rule == "ucf":
        return set(UCF_CLASSES)
    if rule == "xd":
        return {c for code, c in XD_CLASSES.items() if code != "A"}
    return None
