"""Annotation parsers: the real UCF-Crime / XD-Violence files and hand-made bad lines."""

from __future__ import annotations

import pytest

from pivad.data.annotations import Annotation, parse_annotations, video_id
from pivad.errors import ConfigError, DataError

# The 16 UCF-Crime test videos with two events, read off UCF_Annotation.txt by eye (s2 != -1).
UCF_TWO_EVENTS = {
    "Shoplifting007_x264", "Burglary037_x264", "Arson011_x264", "Shoplifting027_x264",
    "Assault010_x264", "Burglary021_x264", "Shoplifting010_x264", "Vandalism028_x264",
    "Vandalism017_x264", "Shooting046_x264", "Stealing079_x264", "Shoplifting022_x264",
    "Shooting047_x264", "Stealing019_x264", "Vandalism036_x264", "Explosion033_x264",
}  # fmt: skip


@pytest.fixture(scope="module")
def ucf(data_dir):
    return parse_annotations(data_dir / "annotations" / "UCF_Annotation.txt", "ucf")


@pytest.fixture(scope="module")
def xd(data_dir):
    return parse_annotations(data_dir / "annotations" / "XD_Annotation.txt", "xd")


def test_video_id_forms():
    assert video_id("dataset/Abuse/Abuse028_x264__0.npy") == "Abuse028_x264"
    assert video_id("Abuse/Abuse028_x264.mp4") == "Abuse028_x264"
    assert video_id("Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264__9.npy") == "Normal_Videos_003_x264"
    # XD ids keep their dots and '#'; Windows paths as shipped in XD_Test.list
    xd_line = "E:/DLCode/x/RGBTest/Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6__4.npy"
    assert video_id(xd_line) == "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6"
    assert video_id(r"C:\feats\A.Beautiful.Mind.2001__#00-25-20_00-29-20_label_A") == (
        "A.Beautiful.Mind.2001__#00-25-20_00-29-20_label_A"
    )
    assert video_id("v=S-7rRLrxnVQ__#1_label_B4-0-0") == "v=S-7rRLrxnVQ__#1_label_B4-0-0"


def test_ucf_real_file_counts(ucf):
    assert len(ucf) == 290
    normal = [k for k, a in ucf.items() if a.cls == "Normal"]
    assert len(normal) == 150 and all(not ucf[k].abnormal for k in normal)
    assert sum(a.abnormal for a in ucf.values()) == 140
    assert {k for k, a in ucf.items() if len(a.events) == 2} == UCF_TWO_EVENTS
    assert max(len(a.events) for a in ucf.values()) == 2


def test_ucf_real_file_entries(ucf):
    assert ucf["Arson022_x264"] == Annotation([(3500, 4000)], 8640, "Arson")
    assert ucf["Shoplifting007_x264"] == Annotation([(550, 760), (4630, 4920)], 5124, "Shoplifting")
    assert ucf["Normal_Videos_872_x264"] == Annotation([], 530, "Normal")
    # the file itself has events past the stated frame count (clipped later, kept here)
    assert ucf["Arson011_x264"].events[-1] == (680, 1267) and ucf["Arson011_x264"].n_frames == 1266


def test_xd_real_file(xd):
    # 499 newlines, 500 lines: the last one has no newline; every line is a violent test video
    assert len(xd) == 500
    assert all(a.abnormal and a.n_frames is None and a.cls is None for a in xd.values())
    assert xd["v=S-7rRLrxnVQ__#1_label_B4-0-0"].events == [(0, 1517), (1970, 3038)]
    assert xd["City.of.God.2002__#01-24-10_01-25-10_label_B2-0-0"].events == [(340, 1090)]
    assert max(len(a.events) for a in xd.values()) == 22


def test_msad_generic_form(tmp_path):
    p = tmp_path / "msad.txt"
    p.write_text(
        "Assault_2.mp4 Assault 10 20 30 45\n"
        "\n"
        "# a comment line\n"
        "Fire_4 5 9\n"
        "MSAD_normal_testing_1 Normal -1 -1\n"
        "Robbery_7_i3d.npy\n"
    )
    ann = parse_annotations(p, "msad")
    assert ann == {
        "Assault_2": Annotation([(10, 20), (30, 45)], None, "Assault"),
        "Fire_4": Annotation([(5, 9)], None, None),
        "MSAD_normal_testing_1": Annotation([], None, "Normal"),
        "Robbery_7_i3d": Annotation([], None, None),
    }


@pytest.mark.parametrize(
    "fmt, line, message",
    [
        ("ucf", "Abuse/Abuse1.mp4 100 Abuse 10", "odd number of frame indices"),
        ("ucf", "Abuse/Abuse1.mp4 100", "got 2 field(s)"),
        ("ucf", "Abuse/Abuse1.mp4 many Abuse 1 2", "frame count must be an integer, got 'many'"),
        ("ucf", "Abuse/Abuse1.mp4 100 Abuse 1 x", "event end must be an integer"),
        ("xd", "vid 50 40", "end before start"),
        ("xd", "vid -1 40", "must be >= 0"),
        ("msad", "vid Assault 1 2 3", "odd number"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, fmt, line, message):
    p = tmp_path / "ann.txt"
    p.write_text("ok/First_x264.mp4 100 Normal -1 -1 -1 -1\n" if fmt == "ucf" else "first 1 2\n")
    p.write_text(p.read_text() + line + "\n")
    with pytest.raises(DataError) as err:
        parse_annotations(p, fmt)
    text = str(err.value)
    assert text.startswith(f"{p}:2: ") and message in text and "\n" not in text


def test_duplicate_missing_and_unknown_format(tmp_path):
    p = tmp_path / "dup.txt"
    p.write_text("a 1 2\nb 3 4\na 5 6\n")
    with pytest.raises(DataError, match=r"dup.txt:3: video 'a' is annotated twice \(first on line 1\)"):
        parse_annotations(p, "xd")
    with pytest.raises(DataError, match="annotation file not found"):
        parse_annotations(tmp_path / "absent.txt", "xd")
    with pytest.raises(ConfigError, match="unknown annotation format 'shanghai'"):
        parse_annotations(p, "shanghai")
