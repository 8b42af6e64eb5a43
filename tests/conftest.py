"""Shared test setup: real task data beside the repository, GPU tests skipped without a GPU."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    # Tests read the real data sets from ../shared/data unless the caller points elsewhere.
    if "ESSA_DATA_DIR" not in os.environ and DEFAULT_DATA.is_dir():
        os.environ["ESSA_DATA_DIR"] = str(DEFAULT_DATA)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
