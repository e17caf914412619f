"""``pivad data index``: a dataset from a folder or CSV of videos; every bad input is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pivad.cli import main

av = pytest.importorskip("av")


def write_video(path: Path, frames: int, fps: int = 16, size: int = 32, seed: int = 0) -> Path:
    """A small MPEG-4 video of random frames (``frames`` frames at ``fps``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return path


def make_folder(root: Path, normal: int = 4, fight: int = 4, frames: int = 40) -> Path:
    for i in range(normal):
        write_video(root / "normal" / f"n{i}.mp4", frames, seed=i)
    for i in range(fight):
        write_video(root / "Fighting" / f"f{i}.mp4", frames, seed=100 + i)
    return root


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pivad: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("videos"))


def test_folder_with_annotations_writes_a_dataset_pivad_reads(videos, tmp_path, capsys) -> None:
    ann = tmp_path / "ann.csv"
    # f0..f3 are 40 frames at 16 fps (2.5 s); two intervals for f1, one in frames for f2
    ann.write_text("video,start,end,unit\nf0.mp4,0.5,1.0,s\nf1,0,0.25,s\nf1,2.0,2.5,s\nf2,16,31,f\n")
    out = tmp_path / "data"
    assert main(["data", "index", str(videos), "--out", str(out), "--annotations", str(ann), "--crops", "1"]) == 0
    from pivad.config import load_config
    from pivad.data.annotations import parse_annotations
    from pivad.data.lists import read_list

    cfg = load_config(out / "pivad.yaml")
    assert cfg.data.label_rule == "folder" and cfg.data.num_crops == 1 and cfg.data.classes == ["Fighting"]
    train = read_list(cfg.data.train_list, root=cfg.data.root, label_rule="folder", check_files=False)
    test = read_list(cfg.data.test_list, root=cfg.data.root, label_rule="folder", check_files=False)
    assert {it.name for it in train} | {it.name for it in test} == {f"n{i}" for i in range(4)} | {f"f{i}" for i in range(4)}
    assert not {it.name for it in train} & {it.name for it in test}
    # one of four per class is tested (round(0.25*4)); the abnormal one is an annotated video
    assert sorted((it.label, it.cls) for it in test) == [(0, "Normal"), (1, "Fighting")]
    tested = next(it.name for it in test if it.label)
    assert tested in {"f0", "f1", "f2"}
    anns = parse_annotations(cfg.data.annotation, "ucf")
    expect = {"f0": [(8, 15)], "f1": [(0, 3), (32, 39)], "f2": [(16, 31)]}[tested]
    assert anns[tested].events == expect
    gt = np.load(out / "gt.npy")
    assert gt.dtype == np.uint8 and gt.size == 2 * 3 * 16  # two test videos of ceil(40/16) = 3 snippets
    # the same seed draws the same split; the rest of pivad accepts the config
    assert main(["config", "show", "-c", str(out / "pivad.yaml")]) == 0


def test_csv_source_with_explicit_split(videos, tmp_path) -> None:
    rows = ["video,label,class,split"]
    rows += [f"{videos}/normal/n{i}.mp4,normal,,{'test' if i == 0 else 'train'}" for i in range(4)]
    rows += [f"{videos}/Fighting/f{i}.mp4,1,Brawl,{'test' if i == 3 else 'train'}" for i in range(4)]
    src = tmp_path / "videos.csv"
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "data"
    assert main(["data", "index", str(src), "--out", str(out), "--crops", "5"]) == 0
    lines = (out / "lists" / "test.list").read_text().split()
    assert lines[0] == "rgb/normal/n0__0.npy" and lines[5] == "rgb/Brawl/f3__0.npy" and len(lines) == 10
    assert not (out / "annotations.txt").exists()  # no intervals: nothing to evaluate against


def _index(capsys, *args: str) -> str:
    assert main(["data", "index", *args]) == 2
    return error_line(capsys)


def test_bad_videos_are_one_line_naming_the_file(tmp_path, capsys) -> None:
    root = make_folder(tmp_path / "v", normal=2, fight=2, frames=20)
    bad = root / "Fighting" / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    line = _index(capsys, str(root), "--out", str(tmp_path / "d"))
    assert str(bad) in line
    bad.unlink()
    empty = root / "Theft"
    empty.mkdir()
    line = _index(capsys, str(root), "--out", str(tmp_path / "d"))
    assert str(empty) in line and "no videos" in line
    empty.rmdir()
    write_video(root / "Fighting" / "n0.avi", 20)  # same stem as normal/n0.mp4
    line = _index(capsys, str(root), "--out", str(tmp_path / "d"))
    assert "duplicate video name 'n0'" in line and str(root / "Fighting" / "n0.avi") in line
    (root / "Fighting" / "n0.avi").unlink()
    assert not (tmp_path / "d" / "pivad.yaml").exists()  # nothing written on error


def test_zero_frame_video(tmp_path, capsys) -> None:
    root = make_folder(tmp_path / "v", normal=2, fight=2, frames=20)
    zero = root / "normal" / "zero.mkv"
    with av.open(str(zero), "w") as out:  # a header and no frame
        stream = out.add_stream("mpeg4", rate=16)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        out.start_encoding()
        out.mux(stream.encode())
    assert zero.stat().st_size > 0
    line = _index(capsys, str(root), "--out", str(tmp_path / "d"))
    assert str(zero) in line


@pytest.mark.parametrize("row, problem", [
    ("f0.mp4,2.0,3.5,s", "outside f0.mp4"),  # the video is 1.25 s long
    ("f0.mp4,0,20,f", "outside f0.mp4"),  # 20 frames: 0..19
    ("f0.mp4,1.0,0.5,s", "end not after start"),
    ("n0.mp4,0,0.5,s", "is normal"),
    ("ghost.mp4,0,0.5,s", "not among the indexed videos"),
    ("f0.mp4,a,0.5,s", "must be numbers"),
])
def test_bad_intervals_name_the_csv_line(tmp_path, capsys, row, problem) -> None:
    root = make_folder(tmp_path / "v", normal=2, fight=2, frames=20)
    ann = tmp_path / "ann.csv"
    ann.write_text(f"video,start,end,unit\nf1,0,0.5,s\n{row}\n")
    line = _index(capsys, str(root), "--out", str(tmp_path / "d"), "--annotations", str(ann))
    assert f"{ann}:3" in line and problem in line


def test_empty_splits_and_missing_normal(tmp_path, capsys) -> None:
    root = make_folder(tmp_path / "v", normal=2, fight=1, frames=20)
    line = _index(capsys, str(root), "--out", str(tmp_path / "d"))  # one abnormal video: test or train, not both
    assert str(root) in line and "empty split: no abnormal test videos" in line
    src = tmp_path / "s.csv"
    src.write_text(f"video,label,split\n{root}/normal/n0.mp4,0,train\n{root}/normal/n1.mp4,0,train\n"
                   f"{root}/Fighting/f0.mp4,1,train\n")
    line = _index(capsys, str(src), "--out", str(tmp_path / "d"))
    assert str(src) in line and "no normal test videos" in line
    only = tmp_path / "w"
    write_video(only / "Fighting" / "a.mp4", 20)
    assert "no normal/ folder" in _index(capsys, str(only), "--out", str(tmp_path / "d"))


def test_csv_problems(tmp_path, capsys) -> None:
    src = tmp_path / "s.csv"
    src.write_text("video,lable\nx.mp4,0\n")
    assert f"{src}:1" in _index(capsys, str(src), "--out", str(tmp_path / "d"))
    src.write_text("video,label\nx.mp4,maybe\n")
    assert f"{src}:2" in _index(capsys, str(src), "--out", str(tmp_path / "d"))
    src.write_text("video,label\nmissing.mp4,0\n")
    assert str(tmp_path / "missing.mp4") in _index(capsys, str(src), "--out", str(tmp_path / "d"))


def test_folder_label_rule(tmp_path) -> None:
    from pivad.data.lists import read_list
    from pivad.errors import DataError

    listed = tmp_path / "a.list"
    listed.write_text("rgb/normal/x__0.npy\nrgb/Theft/y__0.npy\n")
    items = read_list(listed, label_rule="folder", check_files=False)
    assert [(it.name, it.label, it.cls) for it in items] == [("x", 0, "Normal"), ("y", 1, "Theft")]
    listed.write_text("z__0.npy\n")
    with pytest.raises(DataError, match="line 1.*no folder"):
        read_list(listed, label_rule="folder", check_files=False)
