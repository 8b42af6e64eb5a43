"""Fixtures of the pool tests (their helpers are in pool_helpers.py)."""

from pathlib import Path

import pytest
from pool_helpers import write_pool_files


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return write_pool_files(tmp_path_factory.mktemp("pool"))
