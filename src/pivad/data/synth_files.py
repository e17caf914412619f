"""Which files in a finished synthetic dataset the generator wrote, so that replacing it loses nothing else.

The generator's own record of what it wrote is its lists (every RGB crop file, relative to the
dataset folder) and ``meta.json`` (the modality names); from those follow the per-video modality
files. Together with the fixed names (lists, ``annotations.txt``, ``gt.npy``, ``meta.json``) that
is the whole of its output: anything else in the folder is the user's.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

FIXED = ("lists/train.list", "lists/test.list", "annotations.txt", "gt.npy", "meta.json")


def generator_files(root: Path, meta: dict[str, Any]) -> set[str] | None:
    """Paths (POSIX, relative to ``root``) the generator wrote there; None when its lists are unreadable."""
    files = set(FIXED)
    videos: set[str] = set()
    for split in ("train", "test"):
        try:
            lines = (root / "lists" / f"{split}.list").read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        for line in filter(None, (ln.strip() for ln in lines)):
            rel = PurePosixPath(line)
            if rel.is_absolute() or ".." in rel.parts:
                return None
            files.add(str(rel))
            videos.add(rel.name.rsplit("__", 1)[0])
    names = [m.get("name") for m in meta.get("modalities", []) if isinstance(m, dict)]
    for name in names:
        files.update(f"modalities/{name}/{video}.npy" for video in videos)
    return files


def first_foreign(root: Path, meta: dict[str, Any]) -> Path | None:
    """The first entry under ``root`` (sorted walk) the generator did not write, or None.

    Folders count as the generator's only when they lead to one of its files; a folder that cannot
    be listed, a link, or lists that cannot be read make the whole folder count as foreign.
    """
    own = generator_files(root, meta)
    if own is None:
        return root / "lists"
    own_dirs = {str(parent) for f in own for parent in PurePosixPath(f).parents if str(parent) != "."}
    unreadable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            rel = (base / name).relative_to(root).as_posix()
            is_dir = name in dirnames and not (base / name).is_symlink()
            if rel not in (own_dirs if is_dir else own):
                return base / name
    if unreadable:
        return Path(unreadable[0].filename or root)
    return None
