"""Where a backbone's weights come from, and how the manifest records them.

A model spec is one of:
- ``tiny-random``: a tiny randomly initialised configuration (seeded, so every process builds the same
  weights). For tests and debugging only: its features carry no information.
- a local directory or file: loaded offline; the manifest records the sha256 of its weight files.
- a Hugging Face model name (e.g. ``depth-anything/Depth-Anything-V2-Small-hf``): loaded with
  ``from_pretrained`` (downloads into the Hugging Face cache on first use); the manifest records the
  name and the resolved commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch

from pivad.errors import PivadError

TINY = "tiny-random"
TINY_SEED = 0
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


def is_tiny(spec: str) -> bool:
    return spec == TINY


@contextlib.contextmanager
def seeded(seed: int = TINY_SEED) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def describe_weights(spec: str, model: Any = None) -> dict[str, Any]:
    """The manifest's ``weights`` entry for a model spec (sha256 of local weight files)."""
    if is_tiny(spec):
        return {"source": TINY, "seed": TINY_SEED}
    path = Path(spec).expanduser()
    if path.exists():
        return {
            "source": "local",
            "path": str(path.resolve()),
            "sha256": {p.name: sha256_file(p) for p in weight_files(path)},
        }
    info: dict[str, Any] = {"source": "hub", "name": spec}
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit:
        info["commit"] = commit
    return info


def load_pretrained(cls: Any, spec: str, what: str) -> Any:
    """``cls.from_pretrained(spec)`` with a one-line error naming the spec when it cannot be loaded."""
    path = Path(spec).expanduser()
    try:
        if path.exists():
            return cls.from_pretrained(str(path), local_files_only=True)
        return cls.from_pretrained(spec)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PivadError(f"{spec}: cannot load {what} weights ({first})") from None


def read_preprocessor_config(spec: str) -> dict[str, Any]:
    """The weights' ``preprocessor_config.json`` (mean/std/sizes), or ``{}`` when there is none."""
    if is_tiny(spec):
        return {}
    path = Path(spec).expanduser()
    if path.is_dir():
        f = path / "preprocessor_config.json"
        return json.loads(f.read_text()) if f.is_file() else {}
    if path.exists():
        return {}
    try:
        from transformers.utils import cached_file

        f = cached_file(spec, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):
        return {}
    return json.loads(Path(f).read_text()) if f else {}


def size_of(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """A size field of a processor config: ``size``/``crop_size`` as an int or a dict."""
    for key in keys:
        if key not in cfg or cfg[key] is None:
            continue
        v = cfg[key]
        if isinstance(v, dict):
            for k in ("shortest_edge", "longest_edge", "height"):
                if k in v:
                    return (v["height"], v["width"]) if k == "height" and "width" in v else v[k]
        return v
    return default
