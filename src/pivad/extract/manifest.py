"""``ROOT/manifest.json`` of a modality store: how each modality's features were made.

One entry per modality: backbone, weights (name/path, sha256 of local weight files), layer, pooling,
preprocessing, frames sampled per snippet, output width, snippet length, pivad version, and the dates
of the first and the latest run that wrote features. Features made with other settings must not be
mixed into the same folder: :func:`reconcile` refuses (one-line error) unless forced, and a forced
change keeps the replaced entry under ``replaced`` so the history stays visible.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from pathlib import Path
from typing import Any

from pivad import __version__
from pivad.errors import DataError
from pivad.io import atomic_write_json

MANIFEST = "manifest.json"
FORMAT = 1
# entry keys that describe a run rather than the features: they may differ between runs
RUN_KEYS = ("pivad_version", "created", "updated", "replaced")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def make_entry(description: dict[str, Any], snippet: int = 16) -> dict[str, Any]:
    """A manifest entry from a backbone's ``describe()``."""
    stamp = now()
    return {**description, "snippet": snippet, "pivad_version": __version__, "created": stamp, "updated": stamp}


def settings(entry: dict[str, Any]) -> dict[str, Any]:
    """The part of an entry that determines the features (compared between runs)."""
    return {k: v for k, v in entry.items() if k not in RUN_KEYS}


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return {"format": FORMAT, "modalities": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8 text
        raise DataError(f"{path}: unreadable manifest ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("modalities"), dict):
        raise DataError(f"{path}: not a pivad modality manifest (no 'modalities' object)")
    return data


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            a = json.dumps(old.get(key), sort_keys=True)
            b = json.dumps(new.get(key), sort_keys=True)
            return f"{key}: {a[:120]} -> {b[:120]}"
    return "?"


@contextlib.contextmanager
def _locked(root: Path):
    """An exclusive lock on ``root/.manifest.lock`` (two runs starting together must not lose an entry)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".manifest.lock", "a") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def reconcile(root: Path, entries: dict[str, dict[str, Any]], force: bool = False) -> set[str]:
    """Check the requested ``entries`` against ``root``'s manifest and write the merged manifest.

    Returns the modalities whose settings changed (only possible with ``force``): their existing
    feature files must be recomputed. Raises :class:`DataError` when settings differ without ``force``,
    or when ``root/<modality>/`` already holds features that no manifest entry describes.
    """
    root = Path(root)
    with _locked(root):
        return _reconcile(root, entries, force)


def _reconcile(root: Path, entries: dict[str, dict[str, Any]], force: bool) -> set[str]:
    data = read_manifest(root)
    known = data["modalities"]
    changed: set[str] = set()
    for name, new in entries.items():
        old = known.get(name)
        if old is None:
            folder = root / name
            if not force and folder.is_dir() and any(folder.glob("*.npy")):
                raise DataError(f"{folder}: holds features that {root / MANIFEST} does not describe; "
                                "use another --out, or --force to recompute them with the requested settings")
            if folder.is_dir() and any(folder.glob("*.npy")):
                changed.add(name)
            known[name] = new
        elif settings(old) != settings(new):
            if not force:
                raise DataError(f"{root / MANIFEST}: '{name}' features there were made with other settings "
                                f"({_first_difference(settings(old), settings(new))}); use another --out, or --force "
                                "to recompute them with the requested settings")
            replaced = old.pop("replaced", [])
            known[name] = {**new, "replaced": replaced + [old]}
            changed.add(name)
        else:
            known[name] = {**old, "pivad_version": new["pivad_version"], "updated": new["updated"]}
    data["format"] = FORMAT
    atomic_write_json(root / MANIFEST, data)
    return changed
