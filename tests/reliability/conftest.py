"""Fixtures of the coordinator fault tests: a tiny model, and one uninterrupted FakePool run of the
kill driver's configuration that interrupted runs must come back to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "essa"))
sys.path.insert(0, str(HERE))
from coordinator_kill_driver import config  # noqa: E402
from fake_pool import FakePool, write_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def straight(model_dir, tmp_path_factory):
    from essa.run.coordinator import align

    run = tmp_path_factory.mktemp("straight") / "run"
    align(config(str(model_dir)), run, resume=False, pool_factory=FakePool)
    return run
