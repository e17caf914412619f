"""Per-video modality features stored beside the RGB features.

Layout: ``<root>/<modality>/<video>.npy``, ``[T, d_j]`` (float16/32/64; returned as float32), one row
per 16-frame snippet, shared by all crops of the video. ``d_j`` must equal the configured width.

T alignment with the RGB features of the same video (``data.t_align``):

- ``strict`` (default): the modality must have exactly the RGB T; otherwise a DataError names the
  modality file and both T's.
- ``resample``: a modality with ``Tm`` rows is mapped onto the ``T`` RGB snippets by nearest index,
  snippet i taking row ``floor((i + 1/2) * Tm / T)`` (see :func:`pivad.data.resample.nearest_index`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from pivad.config import ModalityConfig
from pivad.data.features import load_features, map_features
from pivad.data.resample import align_rows
from pivad.errors import ConfigError, DataError
from pivad.io import not_regular

T_ALIGN_MODES = ("strict", "resample")


class ModalityStore:
    """Reads ``<root>/<modality>/<video>.npy`` for a fixed set of modalities, checked against the RGB T."""

    def __init__(
        self,
        root: str | Path,
        modalities: Sequence[ModalityConfig] | Sequence[tuple[str, int]],
        t_align: str = "strict",
        resolve: Callable[[Path], Path] | None = None,
    ):
        if t_align not in T_ALIGN_MODES:
            raise ConfigError(f"data.t_align: unknown mode {t_align!r} (known: {', '.join(T_ALIGN_MODES)})")
        self.root = Path(root)
        self.t_align = t_align
        self.resolve = resolve  # source file -> the file actually read (a feature cache), None: the source
        self.dims: dict[str, int] = {}
        for modality in modalities:
            name, dim = (modality.name, modality.dim) if isinstance(modality, ModalityConfig) else modality
            if not name or dim < 1:
                raise ConfigError(f"data.modalities: each modality needs a name and a dim >= 1, got {name!r}, {dim}")
            if name in self.dims:
                raise ConfigError(f"data.modalities: modality {name!r} is listed twice")
            self.dims[name] = int(dim)
        for name in self.dims:
            if not (self.root / name).is_dir():
                raise DataError(f"{self.root / name}: modality folder not found (modality store {self.root})")

    @property
    def names(self) -> list[str]:
        return list(self.dims)

    def path(self, modality: str, video: str) -> Path:
        return self.root / modality / f"{video}.npy"

    def missing(self, videos: Iterable[str]) -> list[Path]:
        """The modality files absent for ``videos`` (empty when the store covers them all)."""
        return [self.path(m, v) for v in videos for m in self.dims if not self.path(m, v).is_file()]

    def load(self, video_name: str, T: int, *, mmap: bool = False) -> dict[str, np.ndarray]:
        """Every modality of one video as ``[T, d_j]``, aligned to the video's RGB ``T``.

        Validated float32 arrays; with ``mmap``, memory maps in the file's dtype (header and size
        checked, values not) or, when rows had to be aligned, the aligned rows.
        """
        out = {}
        for name, dim in self.dims.items():
            path = self.path(name, video_name)
            if not path.is_file():
                why = not_regular(path) or "modality file not found"
                raise DataError(f"{path}: {why} (modality {name} of video {video_name})")
            if self.resolve is not None:
                path = self.resolve(path)
            feat = map_features(path, dim) if mmap else load_features(path, dim=dim)  # (Tm, d)
            if feat.shape[0] != T:
                if self.t_align == "strict":
                    raise DataError(
                        f"{path}: modality {name} has T={feat.shape[0]} snippets but the RGB features of "
                        f"{video_name} have T={T} (data.t_align strict)"
                    )
                feat = align_rows(feat, T)  # (T, d)
            out[name] = feat
        return out
