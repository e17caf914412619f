"""A full disk (issue 21): free space checked before long writes of known size, and a write the disk
refuses (ENOSPC, EDQUOT, EROFS) anywhere is one line naming the file, exit 2, no temporary file left.

The refusal is simulated at its source (``open``'s file object raising ENOSPC) for every verb, and,
where this sandbox may mount a small tmpfs, made real (skipped where mount is not permitted).
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import subprocess
import uuid
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from pivad.cli import main
from test_bad_input import _one_line
from test_detect import FAST, make_checkpoint
from test_resume import tiny_config

CLIP = Path(__file__).parent / "data" / "videos" / "carphone_40.mp4"
Usage = namedtuple("Usage", "total used free")


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files a failed atomic write would have left."""
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(".pivad-")] if folder.exists() else []


@pytest.fixture
def free_bytes(monkeypatch):
    """``set(n)``: every file system reports ``n`` bytes free."""
    def set_free(n: int) -> None:
        monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - n, n))

    return set_free


class _FullFile:
    """A file object whose writes fail as on a full disk (after the real file was created)."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __iter__(self):
        return iter(self._fh)


@pytest.fixture
def disk_full_under(monkeypatch):
    """``fill(folder)``: files opened for writing under ``folder`` refuse every write with ENOSPC."""
    real_open = builtins.open

    def fill(folder: Path) -> None:
        root = str(folder.resolve())

        def full_open(file, mode="r", *args, **kwargs):
            fh = real_open(file, mode, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") \
                    and os.path.abspath(os.fspath(file)).startswith(root):
                return _FullFile(fh)
            return fh

        monkeypatch.setattr(builtins, "open", full_open)

    return fill


# ------------------------------------------------------------------------------- free space checked first


def test_output_check_fails_on_a_full_disk(tmp_path, capsys, free_bytes):
    free_bytes(0)
    out = tmp_path / "ds"
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny"]) == 2
    _one_line(capsys, str(out), "no space left on device")
    assert not out.exists() and _leftovers(tmp_path) == []


def test_synth_checks_free_space_before_writing(tmp_path, capsys, free_bytes):
    free_bytes(100_000)
    out = tmp_path / "ds"
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny"]) == 2
    err = _one_line(capsys, f"{out}: not enough free space: needs ", "100.0 kB (100,000 bytes) free")
    assert "synthetic dataset" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_extract_rgb_checks_free_space_from_frame_counts(tmp_path, capsys, free_bytes):
    free_bytes(10_000)
    out = tmp_path / "feats"
    assert main(["extract", "rgb", str(CLIP), "--out", str(out), "--crops", "5", "--weights", "random:0",
                 "--no-progress"]) == 2
    # 40 frames: 3 snippets x 5 crops x 1024 x 4 bytes + 5 headers
    _one_line(capsys, f"{out}: not enough free space: needs 62.1 kB (62,080 bytes)", "10.0 kB (10,000 bytes) free")
    assert not out.exists()


def test_extract_modalities_checks_free_space(tmp_path, capsys, free_bytes):
    pytest.importorskip("pivad.extract.modalities")
    free_bytes(100)
    out = tmp_path / "mods"
    assert main(["extract", "modalities", str(CLIP), "--out", str(out), "--modalities", "depth",
                 "--depth-model", "tiny-random", "--no-progress"]) == 2
    _one_line(capsys, f"{out}: not enough free space: needs 512 bytes", "100 bytes free")  # 3 x 32 x 4 + 128


def test_export_checks_free_space(tmp_path, capsys, free_bytes):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    free_bytes(1_000)
    out = tmp_path / "model.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 2
    _one_line(capsys, f"{out}: not enough free space", "for the ONNX model", "(1,000 bytes) free")
    assert not out.exists() and _leftovers(tmp_path) == []


# ------------------------------------------------------------------------- a write refused part-way


def _no_space(capsys, folder: Path) -> None:
    _one_line(capsys, str(folder), "no space left on device")
    assert _leftovers(folder) == [], _leftovers(folder)


def test_detect_disk_full_is_one_line(tmp_path, capsys, disk_full_under):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "det"
    disk_full_under(out)
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(out), "--html", *FAST]) == 2
    _no_space(capsys, out)


def test_extract_rgb_disk_full_stops_with_one_line(tmp_path, capsys, disk_full_under):
    out = tmp_path / "feats"
    disk_full_under(out)
    assert main(["extract", "rgb", str(CLIP), str(CLIP), "--out", str(out), "--crops", "1", "--weights",
                 "random:0", "--crop-size", "32", "--resize", "96x72", "--no-progress"]) == 2  # fmt: skip
    _no_space(capsys, out)
    assert not list(out.glob("*.npy"))


def test_synth_disk_full_is_one_line_and_leaves_nothing(tmp_path, capsys, disk_full_under):
    disk_full_under(tmp_path)
    out = tmp_path / "ds"
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny"]) == 2
    _one_line(capsys, str(tmp_path), "no space left on device")
    assert list(tmp_path.iterdir()) == []  # no half-written dataset, no temporary folder


def test_export_disk_full_is_one_line(tmp_path, capsys, disk_full_under):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "onnx" / "model.onnx"
    out.parent.mkdir()
    disk_full_under(out.parent)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 2
    _no_space(capsys, out.parent)
    assert list(out.parent.iterdir()) == []


def test_evaluate_disk_full_is_one_line(tiny_dataset, tmp_path, capsys, disk_full_under):
    import torch

    from pivad.config import to_dict
    from pivad.engine.checkpoint import save_checkpoint
    from pivad.models import build_model

    cfg = tiny_config(tiny_dataset)
    torch.manual_seed(0)
    ckpt = tmp_path / "urdmu.pt"
    save_checkpoint(ckpt, {"kind": "urdmu", "config": to_dict(cfg), "model": build_model("urdmu", cfg).state_dict(),
                           "step": 1, "phase": "teacher"})  # fmt: skip
    out = tmp_path / "eval"
    out.mkdir()
    disk_full_under(out)
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(out), "--no-progress"]) == 2
    _no_space(capsys, out)


def test_other_os_errors_still_raise(monkeypatch):
    """The CLI's net catches disk errors only; anything else keeps its traceback (a bug to report)."""
    import pivad.commands.info as info

    def broken(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(info, "run", broken)
    with pytest.raises(OSError):
        main(["info"])


# ------------------------------------------------------------------------------- a real full disk


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 kB tmpfs at tmp_path/mnt (root and mount permission needed, else skipped)."""
    mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount not permitted here ({done.stderr.decode().strip()[:80]})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_full_disk(tiny_tmpfs, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    # detect: the outputs' size is not known beforehand; the PNG and page do not fit in 256 kB after the filler
    filler = tiny_tmpfs / "filler"
    filler.write_bytes(b"\0" * (200 * 1024))
    out = tiny_tmpfs / "det"
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(out), "--html", *FAST]) == 2
    _no_space(capsys, out)
    # synth: refused before it starts; a disk with no byte left fails the output check itself
    assert main(["data", "synth", "--out", str(tiny_tmpfs / "ds"), "--preset", "tiny"]) == 2
    _one_line(capsys, f"{tiny_tmpfs / 'ds'}: not enough free space")
    with pytest.raises(OSError) as full:
        with open(tiny_tmpfs / "rest", "wb", buffering=0) as fh:
            while True:
                fh.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    assert main(["extract", "rgb", str(CLIP), "--out", str(tiny_tmpfs / "f"), "--weights", "random:0"]) == 2
    _one_line(capsys, str(tiny_tmpfs / "f"), "no space left on device")
    assert np.array_equal(np.frombuffer(filler.read_bytes(), np.uint8), np.zeros(200 * 1024, np.uint8))


# ----------------------------------------------------------------------- data synth where it cannot write


def test_synth_under_a_file_is_one_line(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("the user's")
    assert main(["data", "synth", "--out", str(taken / "ds"), "--preset", "tiny"]) == 2
    _one_line(capsys, str(taken / "ds"), "which is a file")
    assert taken.read_text() == "the user's"


def test_synth_into_an_unwritable_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """Root ignores permission bits, so the refusal the OS gives is simulated at its source."""
    import tempfile

    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp
    ro = tmp_path / "ro"
    ro.mkdir()

    def denied(real):
        def call(*args, **kwargs):
            if str(kwargs.get("dir", "")).startswith(str(ro)):
                raise PermissionError(13, "Permission denied")
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(tempfile, "mkstemp", denied(real_mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", denied(real_mkdtemp))
    assert main(["data", "synth", "--out", str(ro / "ds"), "--preset", "tiny"]) == 2
    _one_line(capsys, str(ro / "ds"), "cannot write output here (no permission to write there)")


def test_synth_on_a_read_only_mount(tiny_tmpfs, capsys):
    done = subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("remount not permitted here")
    assert main(["data", "synth", "--out", str(tiny_tmpfs / "ds"), "--preset", "tiny"]) == 2
    _one_line(capsys, str(tiny_tmpfs / "ds"), "read-only file system")


def test_stream_csv_on_a_full_disk_is_one_line(tmp_path, capsys, disk_full_under):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    disk_full_under(csv_dir)
    assert main(["detect", "--stream", str(CLIP), "--ckpt", str(ckpt), "--idle-timeout", "0.1", "--csv",
                 str(csv_dir / "s.csv"), *FAST]) == 2  # fmt: skip
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("pivad: error:")]
    assert errors == [f"pivad: error: {csv_dir / 's.csv'}: no space left on device"] and "Traceback" not in err
