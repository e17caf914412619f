"""The Ray executor gives the same files as a local run (modalities via the CLI, RGB via the runner).

Small on purpose: starting Ray and its worker processes costs seconds. One thread per actor (Ray's
CPU share of 1) and one thread locally, so float sums run in the same order and the arrays are equal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from pivad.cli import main  # noqa: E402
from pivad.extract.ray_executor import RayExecutor  # noqa: E402
from pivad.extract.runner import run_jobs  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ray
    torch.set_num_threads(threads)
    if started:
        ray.shutdown()
    mp.undo()


@pytest.fixture(scope="module")
def videos(data_dir: Path, tmp_path_factory) -> Path:
    clip = data_dir / "videos" / "carphone_40.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is absent")
    folder = tmp_path_factory.mktemp("videos")
    shutil.copy(clip, folder / "a.mp4")
    shutil.copy(clip, folder / "b.mp4")
    (folder / "c.mp4").write_bytes(b"not a video at all")
    return folder


def test_modalities_on_ray_equal_local(local_ray, videos, tmp_path, capsys):
    args = ["extract", "modalities", str(videos), "--modalities", "flow", "--flow-size", "176", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 1  # c.mp4 fails, a and b are done
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray", "local"]) == 1
    err = capsys.readouterr().err
    assert "3 videos on 2 workers" in err and err.count("c.mp4") >= 2
    for name in ("a", "b"):
        local = np.load(tmp_path / "local" / "flow" / f"{name}.npy")
        remote = np.load(tmp_path / "ray" / "flow" / f"{name}.npy")
        assert local.shape == (3, 128)
        np.testing.assert_array_equal(remote, local)
    assert not (tmp_path / "ray" / "flow" / "c.npy").exists()
    assert (tmp_path / "ray" / "manifest.json").read_text() != ""


def test_extract_rgb_on_ray_equal_local(local_ray, videos, tmp_path):
    args = ["extract", "rgb", str(videos / "a.mp4"), "--crops", "1", "--weights", "random:0", "--crop-size", "64",
            "--batch", "4", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray", "local"]) == 0
    local, on_ray = np.load(tmp_path / "local" / "a__0.npy"), np.load(tmp_path / "ray" / "a__0.npy")
    assert local.shape == (3, 1024)
    np.testing.assert_array_equal(on_ray, local)
    # through the runner directly: a finished video is skipped and no worker is started
    from pivad.extract import rgb

    options = rgb.RGBOptions(crops=1, weights="random:0", crop_size=64, batch=4)
    jobs = rgb.video_jobs([videos / "a.mp4"], tmp_path / "ray", 1)
    again = run_jobs(jobs, rgb.RGBExtractor(options), executor=RayExecutor(), progress=False)
    assert [r.status for r in again.results] == ["skipped"]


def test_full_disk_on_ray_stops_the_run_with_one_line(local_ray, videos, tmp_path, capsys):
    """A worker whose disk is full hands the DiskError back; the run stops as a local one does."""
    from pivad.errors import DiskError

    def worker(job, report):
        raise DiskError(f"{job.outputs[0]}: no space left on device")

    from pivad.extract.runner import VideoJob

    jobs = [VideoJob(n, videos / f"{n}.mp4", (tmp_path / f"{n}.npy",)) for n in ("a", "b")]
    with pytest.raises(DiskError, match="no space left on device") as raised:
        run_jobs(jobs, worker, executor=RayExecutor(), progress=False)
    assert "\n" not in str(raised.value)
