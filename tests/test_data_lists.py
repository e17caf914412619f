"""List files: grouping crops into videos, labels from names, path resolution, bad lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pivad.data.labels import label_rule
from pivad.data.lists import PathResolver, class_names, count_labels, read_list
from pivad.errors import ConfigError, DataError

UCF_CLASSES = ["Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents",
               "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism"]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.zeros((2, 4), np.float32))
    return path


# ------------------------------------------------------------------------------------ real lists


@pytest.mark.parametrize(
    "name, rule, lines, crops, normal, abnormal",
    [
        ("UCF_Train", "ucf", 16100, 10, 800, 810),
        ("UCF_Test", "ucf", 2900, 10, 150, 140),
        ("XD_Train", "xd", 19770, 5, 2049, 1905),
        ("XD_Test", "xd", 4000, 5, 300, 500),
    ],
)
def test_real_lists_counts(shared_dir, name, rule, lines, crops, normal, abnormal):
    path = shared_dir / "data" / "urdmu" / "list" / f"{name}.list"
    text = path.read_text()
    assert not text.endswith("\n")  # as shipped: no newline after the last line
    assert len(text.splitlines()) == lines
    items = read_list(path, label_rule=rule, check_files=False)
    assert sum(len(i.files) for i in items) == lines
    assert {len(i.files) for i in items} == {crops}
    assert count_labels(items) == (normal, abnormal)
    # The field's line-index split (abnormal first) agrees with the labels from names.
    n_abnormal_lines = abnormal * crops
    assert all(i.label == 1 for i in items[:abnormal]) and all(i.label == 0 for i in items[abnormal:])
    assert sum(len(i.files) for i in items[:abnormal]) == n_abnormal_lines
    for item in items:
        assert [int(f.stem.rsplit("__", 1)[1]) for f in item.files] == list(range(crops))
        assert all(f.stem.rsplit("__", 1)[0] == item.name for f in item.files)


def test_real_list_classes(shared_dir):
    lists = shared_dir / "data" / "urdmu" / "list"
    assert class_names(read_list(lists / "UCF_Test.list", check_files=False)) == UCF_CLASSES
    xd = read_list(lists / "XD_Test.list", label_rule="xd", check_files=False)
    assert class_names(xd) == ["Abuse", "Car accident", "Explosion", "Fighting", "Riot", "Shooting"]
    assert xd[0].name == "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6" and xd[0].cls == "Explosion"


def test_ucf_excerpt_names_and_default_root(data_dir):
    path = data_dir / "lists" / "UCF_Train.excerpt.list"
    items = read_list(path, check_files=False)
    assert [(i.name, i.label, i.cls) for i in items] == [
        ("Abuse001_x264", 1, "Abuse"),
        ("Abuse002_x264", 1, "Abuse"),
        ("Normal_Videos949_x264", 0, "Normal"),
        ("Normal_Videos950_x264", 0, "Normal"),
    ]
    # Relative entries resolve under the list's folder by default (no dataset/ folder there: the base).
    assert items[0].files[3] == path.resolve().parent / "Abuse001_x264__3.npy"


def test_relative_entries_under_root_keep_their_folders(data_dir, tmp_path):
    for c in range(10):
        _touch(tmp_path / "dataset" / "Abuse" / f"Abuse001_x264__{c}.npy")
    items = read_list(data_dir / "lists" / "UCF_Train.excerpt.list", root=tmp_path, check_files=False)
    assert items[0].files[0] == tmp_path / "dataset" / "Abuse" / "Abuse001_x264__0.npy"
    # A folder that does not exist under root falls back to the longest existing tail, here root itself.
    assert items[2].files[0] == tmp_path / "Normal_Videos949_x264__0.npy"


@pytest.mark.parametrize("layout_dirs", [("i3d-features", "RGBTest"), ("RGBTest",), ()])
def test_windows_absolute_paths_under_root(data_dir, tmp_path, layout_dirs):
    folder = tmp_path.joinpath(*layout_dirs)
    names = [line.rsplit("/", 1)[1] for line in (data_dir / "lists" / "XD_Test.excerpt.list").read_text().splitlines()]
    for n in names:
        _touch(folder / n)
    items = read_list(data_dir / "lists" / "XD_Test.excerpt.list", root=tmp_path, label_rule="xd")
    assert [f.parent for i in items for f in i.files] == [folder] * 20
    assert count_labels(items) == (2, 2)


def test_default_base_is_the_list_folder_then_its_parent(tmp_path):
    _touch(tmp_path / "rgb" / "Abuse" / "Abuse1__0.npy")  # the synthetic layout: <out>/lists, <out>/rgb
    _touch(tmp_path / "lists" / "Normal_1__0.npy")
    (tmp_path / "lists" / "train.list").write_text("rgb/Abuse/Abuse1__0.npy\nNormal_1__0.npy\n")
    items = read_list(tmp_path / "lists" / "train.list")
    assert [i.files[0] for i in items] == [tmp_path / "rgb" / "Abuse" / "Abuse1__0.npy",
                                           tmp_path / "lists" / "Normal_1__0.npy"]
    (tmp_path / "lists" / "rgb" / "Abuse").mkdir(parents=True)  # the list's own folder wins when both exist
    with pytest.raises(DataError, match="lists/rgb/Abuse/Abuse1__0.npy: feature file not found"):
        read_list(tmp_path / "lists" / "train.list")


def test_windows_path_without_root_names_the_fix(data_dir):
    with pytest.raises(DataError, match=r"feature file not found .*line 1.*set data.root"):
        read_list(data_dir / "lists" / "XD_Test.excerpt.list", label_rule="xd")


def test_backslashes_unc_and_existing_absolute_paths(tmp_path):
    root = tmp_path / "root"
    _touch(root / "feats" / "Abuse" / "a__0.npy")
    elsewhere = _touch(tmp_path / "abs" / "Normal_1__0.npy")
    lst = tmp_path / "x.list"
    lst.write_text("feats\\Abuse\\a__0.npy\n\\\\server\\share\\feats\\Abuse\\a__1.npy\n"
                   f"{elsewhere}\n")
    items = read_list(lst, root=root, check_files=False)
    assert items[0].files == [root / "feats" / "Abuse" / "a__0.npy", root / "feats" / "Abuse" / "a__1.npy"]
    assert items[1].files == [elsewhere]  # exists as listed: used as is, root notwithstanding
    resolver = PathResolver(root)
    assert resolver.resolve("Z:\\x\\feats\\Abuse\\b.npy") == root / "feats" / "Abuse" / "b.npy"


def test_xd_and_msad_and_regex_rules(tmp_path):
    assert label_rule("xd")("v=abc__#1_label_B5-B2-0", "") == (1, "Abuse")
    assert label_rule("xd")("v=abc__#1_label_A", "") == (0, "Normal")
    assert label_rule("msad")("Traffic_accident_12", "") == (1, "Traffic_accident")
    assert label_rule("msad")("MSAD_normal_mall3", "") == (0, "Normal")
    lst = tmp_path / "msad.list"
    lst.write_text("/x/MSAD-I3D-training/Object_falling_2_i3d.npy\n/x/MSAD-I3D-training/MSAD_normal_office1_i3d.npy\n")
    items = read_list(lst, layout="per_video", label_rule="msad", check_files=False)
    assert [(i.name, i.label, i.cls) for i in items] == [("Object_falling_2", 1, "Object_falling"),
                                                         ("MSAD_normal_office1", 0, "Normal")]
    lst.write_text("clips/Fall/v1.npy\nclips/Quiet/calm_2.npy\nv3.npy\n")
    items = read_list(lst, layout="per_video", label_rule="regex:^calm", check_files=False)
    assert [(i.label, i.cls) for i in items] == [(1, "Fall"), (0, "Normal"), (1, "Anomaly")]


def test_per_video_layout_keeps_double_underscore_names(tmp_path):
    lst = tmp_path / "v.list"
    lst.write_text("a__0.npy\na__1.npy\n")
    items = read_list(lst, layout="per_video", check_files=False)
    assert [i.name for i in items] == ["a__0", "a__1"]


@pytest.mark.parametrize(
    "text, rule, message",
    [
        ("", "ucf", "the list has no entries"),
        ("\n  \n# only a comment\n", "ucf", "the list has no entries"),
        ("a__0.npy\nb__0.npy\na__1.npy\n", "ucf", r"line 3: video a was already listed at line 1; the crops"),
        ("a__0.npy\na__0.npy\n", "ucf", r"line 2: crop 0 of video a is listed twice"),
        ("a__0.txt\n", "ucf", r"line 1: expected a .npy feature file"),
        ("v=1__#1_B2__0.npy\n", "xd", r"line 1: 'v=1__#1_B2' has no _label_<code> part"),
    ],
)
def test_bad_lists(tmp_path, text, rule, message):
    lst = tmp_path / "bad.list"
    lst.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_list(lst, label_rule=rule, check_files=False)
    assert str(lst) in str(info.value) and "\n" not in str(info.value)


def test_missing_list_and_missing_feature_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.list: list file not found"):
        read_list(tmp_path / "nope.list")
    lst = tmp_path / "ok.list"
    _touch(tmp_path / "f" / "Abuse1__0.npy")
    lst.write_text("f/Abuse1__0.npy\nf/Abuse1__1.npy\n")
    with pytest.raises(DataError) as info:
        read_list(lst)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'f' / 'Abuse1__1.npy'}: feature file not found")
    assert "line 2" in msg and "\n" not in msg


def test_bad_rules_are_config_errors(tmp_path):
    lst = tmp_path / "a.list"
    lst.write_text("a.npy\n")
    with pytest.raises(ConfigError, match="unknown rule 'ucff'"):
        read_list(lst, label_rule="ucff", check_files=False)
    with pytest.raises(ConfigError, match="invalid regular expression"):
        read_list(lst, label_rule="regex:(", check_files=False)
    with pytest.raises(ConfigError, match="unknown layout"):
        read_list(lst, layout="per_frame", check_files=False)
