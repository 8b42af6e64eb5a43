"""Tensor-parallel slots on a real local Ray cluster that declares 4 logical GPUs, with the fake engine.

Ray schedules logical GPUs whether or not the machine has any, so the placement (groups, bundles,
which actor runs where, what a restart keeps, what shutdown frees) is real; only vLLM's own
tensor-parallel workers, which would take the bundles' GPUs, are absent (the fake starts none).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from pool_helpers import INDICES, candidates, expected_scores, make_config, open_pool

from essa.config import ConfigError, validate
from essa.workers.placement import actor_options, gpu_bundles, one_node_cpus

pytestmark = pytest.mark.timeout(120)


def test_tensor_parallel_slots_hold_no_gpu_themselves():
    options = actor_options(4, 1, [0], 1, {}, tensor_parallel=2)
    assert [(o["num_gpus"], o["num_cpus"]) for o in options] == [(0, 1), (0, 1)]
    assert [(o["num_gpus"], o["num_cpus"]) for o in actor_options(4, 1, [0], 1, {})] == [(1, 1)] * 4
    assert gpu_bundles(4) == [{"GPU": 1, "CPU": 1}, {"GPU": 1}, {"GPU": 1}, {"GPU": 1}]


@pytest.mark.parametrize(
    "engine, problem",
    [
        (dict(gpus=4, tensor_parallel_size=3), "positive multiple of 3"),
        (dict(gpus=0, tensor_parallel_size=2), "positive multiple of 2"),
        (dict(gpus=2, tensor_parallel_size=2, mode="merge"), "use engine.mode=lora"),
        (dict(gpus=2, tensor_parallel_size=0), "engine.tensor_parallel_size=0 must be >= 1"),
    ],
)
def test_bad_tensor_parallel_settings_are_config_errors(files, engine, problem):
    with pytest.raises(ConfigError, match=problem):
        validate(make_config(files, **engine))


def _groups(states=("CREATED",)) -> dict:
    from ray.util import placement_group_table

    return {k: v for k, v in placement_group_table().items() if v["state"] in states and v["name"].startswith("essa-")}


def _actor_group(actor) -> str:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda _w: ray.get_runtime_context().get_placement_group_id()))


@pytest.mark.usefixtures("gpu_cluster")
def test_each_engine_gets_its_own_packed_group_which_survives_a_restart_and_is_freed(files, tmp_path):
    import ray

    cfg, marker = make_config(files, gpus=4, tensor_parallel_size=2, mode="lora"), tmp_path / "crash"
    x = candidates(6, seed=11)
    with open_pool(cfg, ESSA_FAKE_MARKER=str(marker)) as pool:
        assert len(pool.actors) == 2  # 4 GPUs / 2 per engine
        groups = _groups()
        assert len(groups) == 2
        assert all(g["strategy"] == "STRICT_PACK" and len(g["bundles"]) == 2 for g in groups.values())
        assert all(sum(b.get("GPU", 0) for b in g["bundles"].values()) == 2 for g in groups.values())
        homes = [_actor_group(a) for a in pool.actors]
        assert sorted(homes) == sorted(groups) and len(set(homes)) == 2
        assert ray.available_resources().get("GPU", 0) == 0  # every GPU reserved, none left over

        clean = pool.evaluate(x, "train", INDICES, generation=0)
        np.testing.assert_allclose(clean.scores, expected_scores(cfg, x), atol=1e-9)
        marker.write_text("crash")
        faulty = pool.evaluate(x, "train", INDICES, generation=1)
        np.testing.assert_array_equal(faulty.rewards, clean.rewards)
        assert pool.stats["restarts"] == 1
        assert sorted(_actor_group(a) for a in pool.actors) == sorted(groups)  # the restart reused its group
        assert len(_groups()) == 2
    assert not _groups()  # shut down: groups removed, and (asynchronously) their GPUs freed
    deadline = time.monotonic() + 20
    while ray.available_resources().get("GPU", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("GPU", 0) == 4


@pytest.mark.usefixtures("gpu_cluster")
def test_more_gpus_than_the_cluster_has_is_a_clear_error(files):
    from essa.workers.pool import PoolError

    with pytest.raises(PoolError, match=r"--gpus 8 asks for 8 GPUs but the Ray cluster has 4"):
        with open_pool(make_config(files, gpus=8, tensor_parallel_size=2, mode="lora")):
            pass


def test_a_local_gpu_count_is_checked_only_without_a_cluster_address(monkeypatch):
    from ray._private.accelerators import NvidiaGPUAcceleratorManager

    from essa.workers.placement import local_gpu_problem

    monkeypatch.setattr(NvidiaGPUAcceleratorManager, "get_current_node_num_accelerators", staticmethod(lambda: 2))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert local_gpu_problem(2, None) is None and local_gpu_problem(0, None) is None
    assert "this machine has 2" in local_gpu_problem(3, None)
    assert local_gpu_problem(8, "10.0.0.1:6379") is None  # a cluster's GPUs are counted once joined
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert local_gpu_problem(8, None) is None


def test_the_ram_check_counts_the_kv_cache_a_cpu_engine_really_reserves():
    from essa.workers.placement import cpu_kv_cache_gib

    assert [cpu_kv_cache_gib(g) for g in (0.25, 0.5, 1.4, 2.0, 2.6)] == [1, 1, 1, 2, 3]  # whole GiB, at least 1


def test_a_cpu_engine_on_a_cluster_asks_for_one_nodes_cpus_not_the_whole_clusters():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 16.0}},
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
        {"Alive": False, "Resources": {"CPU": 64.0}},
    ]  # a dead node's CPUs are not there
    assert one_node_cpus(nodes, available=24.0) == 16
    assert one_node_cpus(nodes, available=6.0) == 6  # fewer free than the largest node has
    assert one_node_cpus([{"Alive": True, "Resources": {"CPU": 2.0}}], available=2.0) == 2  # one machine: all
    assert one_node_cpus([], available=0.0) == 1
