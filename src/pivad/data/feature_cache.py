"""A float16 copy of the feature files, written once and read in their place (``data.cache_dtype``).

Where: the copy of ``F/<file>.npy`` is ``F/.pivad_cache/float16/<file>.npy`` (beside the features),
or ``<data.cache_dir>/<16 hex digits of sha1(F)>/float16/<file>.npy`` when ``data.cache_dir`` is set
(for read-only feature folders). Each such folder holds ``manifest.json``: per file the source's
size, mtime (ns) and shape when it was copied. Clear it by deleting those folders.

Reuse: a copy is used when its manifest entry matches the source's current size and mtime and the
copy's own size matches its header; otherwise (new, changed or damaged) it is written again from the
source. Sources are validated while copied (the checks of :func:`~pivad.data.features.load_features`,
plus values beyond float16's range, ±65504), so a reused copy needs no second read. Every file is
written to a temporary name and renamed (``os.replace``); the manifest too, every 256 copies and at
the end, so an interrupted build keeps what it finished. float16 keeps 11 significant bits: values
change by up to 2^-11 relative (the effect on training: ``docs/data.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pivad.data.feature_sets import _progress, _run
from pivad.data.features import _open, _read_header, load_features
from pivad.errors import ConfigError, DataError

CACHE_DTYPES = ("none", "float16")
FLOAT16_MAX = float(np.finfo(np.float16).max)
_FLUSH_EVERY = 256


def check_cache_dtype(dtype: str) -> None:
    if dtype not in CACHE_DTYPES:
        raise ConfigError(f"data.cache_dtype: unknown dtype {dtype!r} (known: {', '.join(CACHE_DTYPES)})")


class _Manifest:
    """``manifest.json`` of one cache folder: file name -> source size, mtime_ns and shape."""

    def __init__(self, folder: Path):
        self.folder, self.path, self.entries, self.dirty = folder, folder / "manifest.json", {}, 0
        self.lock = threading.Lock()  # copies are written on several threads
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                self.entries = dict(data["files"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{self.path}: damaged feature cache manifest ({type(exc).__name__}); delete "
                                f"{self.folder} to rebuild the cache") from None

    def flush(self) -> None:
        if not self.dirty:
            return
        tmp = self.path.with_name(f"manifest.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"format": 1, "dtype": "float16", "files": self.entries}, indent=0, allow_nan=False))
        os.replace(tmp, self.path)
        self.dirty = 0


def _stamp(path: Path) -> dict:
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _intact(copy: Path, shape: list[int]) -> bool:
    """Whether ``copy`` is a float16 ``.npy`` of ``shape`` whose size matches its header."""
    try:
        with _open(copy) as fp:
            got, _, dtype = _read_header(fp, copy)
            offset = fp.tell()
        return (list(got) == list(shape) and dtype == np.float16
                and copy.stat().st_size == offset + 2 * int(np.prod(shape)))
    except (DataError, OSError):
        return False


class FeatureCache:
    """Maps source feature files to their float16 copies, writing the copies that are missing or stale."""

    def __init__(self, dtype: str = "float16", cache_dir: str | Path = "", *, progress: bool = True,
                 threads: int = 0):
        check_cache_dtype(dtype)
        if dtype == "none":
            raise ValueError("FeatureCache: dtype 'none' means no cache")
        self.dtype, self.cache_dir = dtype, Path(cache_dir) if cache_dir else None
        self.progress, self.threads = progress, threads

    def folder(self, source_dir: Path) -> Path:
        """The cache folder of the features in ``source_dir``."""
        if self.cache_dir is None:
            return source_dir / ".pivad_cache" / self.dtype
        digest = hashlib.sha1(str(source_dir.resolve()).encode()).hexdigest()[:16]
        return self.cache_dir / digest / self.dtype

    def prepare(self, sources: Iterable[tuple[Path, int, bool]]) -> dict[Path, Path]:
        """``(path, dim, crops)`` of each source -> ``{source: copy}``; writes the copies that need it."""
        sources = list(dict.fromkeys((Path(p), int(d), bool(c)) for p, d, c in sources))
        manifests: dict[Path, _Manifest] = {}
        todo, mapping = [], {}
        for path, dim, crops in sources:
            folder = self.folder(path.parent)
            manifest = manifests.get(folder) or manifests.setdefault(folder, _Manifest(folder))
            copy = folder / path.name
            mapping[path] = copy
            entry = manifest.entries.get(path.name)
            stamp = _stamp(path)
            if not (entry and {k: entry.get(k) for k in stamp} == stamp and _intact(copy, entry.get("shape", []))):
                todo.append((path, dim, crops, copy, manifest, stamp))
        if todo:
            self._write(todo, manifests)
        return mapping

    def _write(self, todo: list, manifests: dict[Path, _Manifest]) -> None:
        def job(i: int) -> int:
            path, dim, crops, copy, manifest, stamp = todo[i]
            array = load_features(path, dim, crops=crops)  # validated float32
            peak = float(np.abs(array).max())
            if peak > FLOAT16_MAX:
                raise DataError(f"{path}: values up to {peak:.6g} exceed the float16 range (±{FLOAT16_MAX:g}); "
                                "use data.cache_dtype none")
            copy.parent.mkdir(parents=True, exist_ok=True)
            tmp = copy.with_name(f"{copy.name}.tmp-{os.getpid()}-{i}")
            with open(tmp, "wb") as fp:
                np.save(fp, np.ascontiguousarray(array, dtype=np.float16))
            os.replace(tmp, copy)
            with manifest.lock:
                manifest.entries[path.name] = {**stamp, "shape": list(array.shape)}
                manifest.dirty += 1
                if manifest.dirty >= _FLUSH_EVERY:
                    manifest.flush()
            return 1

        print(f"feature cache: writing {len(todo)} float16 cop{'y' if len(todo) == 1 else 'ies'}", file=sys.stderr)
        try:
            with _progress(len(todo), "feature cache (float16)", self.progress) as bar:
                _run(job, len(todo), self.threads, bar)
        except OSError as exc:
            raise DataError(f"{exc.filename or 'feature cache'}: cannot write the feature cache "
                            f"({exc.strerror or exc}); set data.cache_dir to a writable folder") from None
        finally:
            for manifest in manifests.values():
                manifest.flush()
