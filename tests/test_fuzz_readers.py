"""Seeded random mutations of real fixtures through the list, annotation and ``.npy`` readers: every
outcome is a clean PivadError (one line, naming the file) or a parse that holds what it promises."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from pivad.data.annotations import parse_annotations
from pivad.data.features import load_features, read_header
from pivad.data.ground_truth import read_gt_vector
from pivad.data.lists import read_list
from pivad.errors import PivadError

DATA = Path(__file__).parent / "data"
CASES = 150
ALPHABET = [b"\0", b"\xff", b"\xc3", b"-", b"-1", b"9" * 12, b" ", b"\t", b"\n", b"\r\n", b"/", b"#", b"__",
            b".npy", b"..", b"Normal", b"_label_", b"e", b"nan", b"\x93NUMPY", b"{", b"}", b"'", b":", b"(", b")"]


def mutate(data: bytes, rng: random.Random, span: int = 0) -> bytes:
    """One to four random edits (deletion, duplication, insertion, byte flip, truncation) of ``data``;
    ``span`` > 0 keeps the edits in the first ``span`` bytes (a .npy header)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        limit = min(len(out), span) if span else len(out)
        i = rng.randrange(max(limit, 1))
        op = rng.randrange(5)
        if op == 0:
            del out[i:i + rng.randint(1, 16)]
        elif op == 1:
            out[i:i] = out[i:i + rng.randint(1, 32)]
        elif op == 2:
            out[i:i] = rng.choice(ALPHABET)
        elif op == 3 and out:
            out[min(i, len(out) - 1)] = rng.randrange(256)
        else:
            del out[rng.randrange(len(out) + 1):]
    return bytes(out)


def _clean_error(exc: PivadError, path: Path) -> None:
    msg = str(exc)
    assert "\n" not in msg and str(path) in msg, msg


def _read_mutations(original: bytes, rng: random.Random, path: Path, read) -> list:
    """Read CASES mutations of ``original`` written to ``path``: each either parses (the results are
    returned) or fails with a clean one-line PivadError naming the file."""
    parsed = []
    for _ in range(CASES):
        path.write_bytes(mutate(original, rng))
        try:
            parsed.append(read(path))
        except PivadError as exc:
            _clean_error(exc, path)
    return parsed


@pytest.mark.parametrize("fixture,rule", [("UCF_Test.excerpt.list", "ucf"), ("XD_Train.excerpt.list", "xd")])
def test_list_reader(tmp_path: Path, fixture: str, rule: str) -> None:
    original = (DATA / "lists" / fixture).read_bytes()
    parsed = _read_mutations(original, random.Random(f"list-{fixture}"), tmp_path / "mutated.list",
                             lambda path: read_list(path, label_rule=rule, check_files=False))
    for items in parsed:
        assert items and all(it.files and it.label in (0, 1) and it.name for it in items)
        assert all(str(f).endswith(".npy") for it in items for f in it.files)
    assert 0 < len(parsed) < CASES  # the mutations reach both outcomes


@pytest.mark.parametrize("fixture,fmt", [("UCF_Annotation.txt", "ucf"), ("XD_Annotation.txt", "xd")])
def test_annotation_reader(tmp_path: Path, fixture: str, fmt: str) -> None:
    original = (DATA / "annotations" / fixture).read_bytes()
    parsed = _read_mutations(original, random.Random(f"ann-{fixture}"), tmp_path / "mutated.txt",
                             lambda path: parse_annotations(path, fmt))
    for by_video in parsed:
        for ann in by_video.values():
            assert all(0 <= s <= e for s, e in ann.events), ann
    assert 0 < len(parsed) < CASES


def test_feature_and_gt_readers(tmp_path: Path, tiny_dataset: Path) -> None:
    feature = next((tiny_dataset / "rgb").rglob("*.npy")).read_bytes()
    dim = read_header(next((tiny_dataset / "rgb").rglob("*.npy")))[0][-1]
    gt = (tiny_dataset / "gt.npy").read_bytes()
    rng = random.Random("npy")
    path = tmp_path / "mutated.npy"
    outcomes = {"features": 0, "gt": 0}
    for case in range(2 * CASES):
        header_only = case % 2 == 0
        path.write_bytes(mutate(feature, rng, span=128 if header_only else 0))
        try:
            arr = load_features(path, dim)
            assert arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[1] == dim and np.isfinite(arr).all()
            outcomes["features"] += 1
        except PivadError as exc:
            _clean_error(exc, path)
        path.write_bytes(mutate(gt, rng, span=128 if header_only else 0))
        try:
            flat = read_gt_vector(path)
            assert flat.ndim == 1 and set(np.unique(flat)) <= {0, 1}
            outcomes["gt"] += 1
        except PivadError as exc:
            _clean_error(exc, path)
    assert all(0 < n < 2 * CASES for n in outcomes.values()), outcomes
