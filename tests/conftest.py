"""Shared test fixtures: the ../shared folder (golden outputs, real data) and tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = Path(__file__).resolve().parent / "data"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout; tests that need its large golden files skip without it."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (golden files live there; CI always has it)")
    return SHARED


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Small real fixtures copied into tests/data (with licences)."""
    return DATA


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The synthetic ``tiny`` preset (seed 0), written once per session; tests only read it."""
    from pivad.data.synth import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("tiny"), preset="tiny")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP wake-up latency (large on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_dataset):
    """A tiny π-VAD run (teacher, both steps, test-selected), trained once per test module."""
    from pivad.engine.trainer import train
    from test_resume import tiny_config

    run = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tiny_dataset, train={"teacher_steps": 2, "warmup_steps": 1, "steps": 2, "eval_every": 2,
                                       "selection": "test"})
    train(cfg, run, progress=False)
    return run
