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


RAY_FIXTURES = {"ray_cluster", "gpu_cluster", "local_ray"}


def _fresh_ray(**resources):
    import ray

    if ray.is_initialized():  # an earlier test's cluster: this one needs its own settings
        ray.shutdown()
    ray.init(include_dashboard=False, log_to_driver=False, **resources)
    return ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with 2 CPUs for the tests of one module."""
    ray = _fresh_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def gpu_cluster():
    """A local Ray cluster that claims 4 (logical) GPUs: placement tests, no GPU needed."""
    ray = _fresh_ray(num_cpus=2, num_gpus=4)
    yield
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    for item in items:  # a test that starts Ray says so: `-m "not ray"` leaves it out
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
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
