"""Loading and validating ``.npy`` feature files.

Every check raises a one-line :class:`~pivad.errors.DataError` that names the file and what is wrong:
missing, unreadable or not a regular file (a folder, a device such as ``/dev/zero``, a FIFO), a header
that declares more data than the file holds (checked before anything is allocated or mapped), wrong
number of axes or width, a non-float dtype (float16/32/64 are accepted and converted to float32;
integers, booleans, complex and object arrays are rejected), no snippets (T = 0), NaN or Inf values.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from pivad.errors import DataError
from pivad.io import not_regular

def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]"


_HEADER_LOCK = threading.Lock()


def _read_header(fp, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an open ``.npy`` file positioned at its start.

    One thread at a time: in CI the mapped loader's threads once got a ``SystemError`` from numpy's header
    parser (``ast.literal_eval``) on a sound file; not reproduced since, the lock costs nothing."""
    try:
        with _HEADER_LOCK:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                return np.lib.format.read_array_header_1_0(fp)
            if version == (2, 0):
                return np.lib.format.read_array_header_2_0(fp)
    except (ValueError, SyntaxError, TypeError, EOFError, UnicodeDecodeError) as exc:
        # numpy parses the header dict with ast.literal_eval: a damaged one raises SyntaxError/TokenError
        # (a SyntaxError subclass in Python >= 3.12; tokenize.TokenError before, caught below)
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(f"{path}: not a .npy file (damaged header: {first})") from None
    except Exception as exc:  # noqa: BLE001 - tokenize.TokenError and whatever else a damaged header raises
        detail = (str(exc).splitlines() or [""])[0][:120]
        raise DataError(f"{path}: not a .npy file (damaged header: {type(exc).__name__}"
                        f"{': ' + detail if detail else ''})") from None
    # format 3.0 only serves structured dtypes with non-latin-1 field names
    raise DataError(f"{path}: .npy format {version[0]}.{version[1]} holds a structured array, expected floats")


def _checked_header(fp, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """:func:`_read_header`, then the declared data size against the bytes that follow the header, so
    that a header claiming ``T = 2**36`` rows is refused before an array or a map of that size is made."""
    shape, fortran, dtype = _read_header(fp, path)
    if dtype.hasobject:  # pickled objects, no fixed size: the dtype check refuses them
        return shape, fortran, dtype
    if any(d < 0 for d in shape):
        raise DataError(f"{path}: not a .npy file (damaged header: shape {_shape_text(tuple(shape))})")
    need = dtype.itemsize
    for d in shape:  # python ints: no overflow on absurd shapes
        need *= d
    have = os.fstat(fp.fileno()).st_size - fp.tell()
    if need > have:
        raise DataError(f"{path}: cannot read as .npy (file is truncated: its header declares shape "
                        f"{_shape_text(tuple(shape))}, {need:,} bytes of data, but {max(have, 0):,} follow)")
    return shape, fortran, dtype


def _open(path: Path):
    why = not_regular(path)  # before open(): opening a FIFO would block
    if why:
        raise DataError(f"{path}: {why}")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file from its header alone (no data read)."""
    path = Path(path)
    with _open(path) as fp:
        shape, _, dtype = _checked_header(fp, path)
    return tuple(shape), dtype


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if dtype.kind != "f":
        raise DataError(f"{path}: dtype {dtype} is not a float type (expected float16, float32 or float64)")


def check_shape(
    path: str | Path, shape: tuple[int, ...], dim: int, *, crops: bool = False
) -> None:
    """Raise DataError unless ``shape`` is ``[T, dim]`` (or ``[T, C, dim]`` when ``crops``) with T > 0."""
    expected = f"[T,{dim}]" + (f" or [T,C,{dim}]" if crops else "")
    ok_rank = len(shape) == 2 or (crops and len(shape) == 3)
    if not ok_rank or shape[-1] != dim or (len(shape) == 3 and shape[1] == 0):
        raise DataError(f"{path}: expected shape {expected}, got {_shape_text(shape)}")
    if shape[0] == 0:
        raise DataError(f"{path}: no snippets (T=0), shape {_shape_text(shape)}")


def feature_shape(path: str | Path, dim: int = 1024, *, crops: bool = False) -> tuple[int, ...]:
    """Validated shape of a feature file, read from its header (dtype and shape checked, values not)."""
    shape, dtype = read_header(path)
    _check_dtype(Path(path), dtype)
    check_shape(path, shape, dim, crops=crops)
    return shape


def _read_data(fp, path: Path, shape: tuple[int, ...], fortran: bool, dtype: np.dtype) -> np.ndarray:
    count = int(np.prod(shape))
    try:
        data = np.fromfile(fp, dtype=dtype, count=count)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data.size != count:
        raise DataError(f"{path}: cannot read as .npy (file is truncated: {data.size} of {count} values)")
    return data.reshape(shape[::-1]).T if fortran else data.reshape(shape)


def _check_finite(path: Path, array: np.ndarray) -> None:
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = ~finite
    first = int(np.argwhere(bad)[0][0])
    n_nan = int(np.isnan(array).sum())
    n_inf = int(bad.sum()) - n_nan
    what = " and ".join(part for part in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else "") if part)
    raise DataError(f"{path}: contains {what} value(s) (first at snippet {first})")


def _map(fp, path: Path, shape: tuple[int, ...], fortran: bool, dtype: np.dtype) -> np.ndarray:
    try:
        return np.memmap(fp, dtype=dtype, mode="r", offset=fp.tell(), shape=shape, order="F" if fortran else "C")
    except ValueError:  # the file is shorter than its header says
        raise DataError(f"{path}: cannot read as .npy (file is truncated)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot map ({exc.strerror or exc})") from None


def map_features(path: str | Path, dim: int = 1024, *, crops: bool = False) -> np.ndarray:
    """A feature file as a read-only memory map in its own dtype, header and file size checked, values not.

    Nothing is read until rows are used; the map (and the pages it touched) goes when the array does.
    """
    path = Path(path)
    with _open(path) as fp:
        shape, fortran, dtype = _checked_header(fp, path)
        _check_dtype(path, dtype)
        check_shape(path, shape, dim, crops=crops)
        return _map(fp, path, shape, fortran, dtype)


def load_features(path: str | Path, dim: int = 1024, mmap: bool = False, *, crops: bool = False) -> np.ndarray:
    """Load a ``[T, dim]`` feature file (``[T, C, dim]`` too when ``crops``) as validated float32.

    ``mmap=True`` maps the file instead of reading it: a float32 file then comes back as a read-only
    memory map (the finiteness check still reads it once); other float dtypes are converted in memory.
    """
    path = Path(path)
    with _open(path) as fp:
        shape, fortran, dtype = _checked_header(fp, path)
        _check_dtype(path, dtype)
        check_shape(path, shape, dim, crops=crops)
        array = _map(fp, path, shape, fortran, dtype) if mmap else _read_data(fp, path, shape, fortran, dtype)
    if array.dtype != np.float32:
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf, reported below
            array = array.astype(np.float32)
    _check_finite(path, array)
    return array


def load_video_features(path: str | Path, dim: int = 1024) -> np.ndarray:
    """A per-video file ``[T, C, dim]`` or ``[T, dim]`` as float32 ``[C, T, dim]`` (C = 1 for 2-D files)."""
    array = load_features(path, dim, crops=True)
    if array.ndim == 2:
        return array[None]  # (1, T, D)
    return np.ascontiguousarray(array.transpose(1, 0, 2))  # (T, C, D) -> (C, T, D)
