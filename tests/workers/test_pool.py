"""The rollout pool on a real local Ray cluster (num_cpus=2) with the fake engine.

Scores are known in advance: the fake's completion carries sum(x), and the reward plugin written
below returns that number plus the example's `k`, so a candidate scores sum(x) + mean(k). Each
fault test starts its own pool (they cannot share: one pool's actors hold the cluster's CPUs),
injects one fault and checks the generation against a fault-free run.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from pool_helpers import INDICES, actor_env, candidates, expected_scores, make_config, open_pool

from essa.config import ConfigError
from essa.workers.actor import WorkItem, WorkResult
from essa.workers.placement import actor_options, cpu_list, split_cores
from essa.workers.pool import PoolError, ResultCollector, chunk_size, cut_work

pytestmark = pytest.mark.timeout(120)


# --- pure helpers (no Ray) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "popsize, actors, size, items",
    [(1, 1, 1, 1), (8, 1, 8, 1), (8, 2, 2, 4), (5, 2, 2, 3), (1, 2, 1, 1), (96, 4, 12, 8), (7, 3, 2, 4)],
)
def test_work_items_cover_the_candidates_in_order(popsize, actors, size, items):
    assert chunk_size(popsize, actors) == size
    work = cut_work(7, 3, candidates(popsize, 0), "train", INDICES, actors)
    assert len(work) == items
    assert [c for item in work for c in item.candidate_ids] == list(range(popsize))
    assert [item.item_id for item in work] == list(range(items))
    assert all(
        item.call == 7 and item.generation == 3 and len(item.vectors) == len(item.candidate_ids) for item in work
    )


def test_base_model_is_one_item():
    (item,) = cut_work(1, -1, None, "validation", INDICES, actors=4)
    assert item.candidate_ids == [0] and item.vectors is None


def _result(item: WorkItem, call: int | None = None, item_id: int | None = None) -> WorkResult:
    ids = item.candidate_ids
    rewards = np.array([[float(c)] * len(item.indices) for c in ids])
    return WorkResult(
        ids,
        rewards,
        np.array(ids) * 10,
        {"generate": 1.0},
        call=item.call if call is None else call,
        item_id=item.item_id if item_id is None else item_id,
    )


def test_collector_reassembles_out_of_order_and_drops_stale_and_duplicate_results():
    stats = dict(items=0, dropped_stale=0, dropped_duplicate=0)
    items = cut_work(5, 2, candidates(5, 0), "train", INDICES, actors=2)  # [0,1] [2,3] [4]
    collector = ResultCollector(5, items, stats)
    assert collector.add(_result(items[2]))
    assert not collector.add(_result(items[0], call=4))  # an earlier call's result (same generation)
    assert not collector.add(_result(items[0], item_id=9))  # no such item in this call
    assert not collector.add(replace(_result(items[0]), candidate_ids=[2, 3]))  # wrong candidates
    assert collector.add(_result(items[0]))
    assert not collector.add(_result(items[0]))  # already completed
    assert not collector.done
    assert collector.add(_result(items[1]))
    assert collector.done
    assert stats == dict(items=3, dropped_stale=3, dropped_duplicate=1)
    result = collector.result()
    np.testing.assert_array_equal(result.scores, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(result.tokens, [0, 10, 20, 30, 40])
    assert result.rewards.shape == (5, len(INDICES)) and result.timings == {"generate": 3.0}


def test_collector_places_evaluation_details_by_candidate():
    items = cut_work(1, -1, candidates(3, 0), "test", INDICES, actors=2, details=True)  # [0] [1] [2]
    assert all(item.details for item in items)
    collector = ResultCollector(1, items, dict(items=0, dropped_stale=0, dropped_duplicate=0))
    for item in reversed(items):
        result = _result(item)
        result.details = {"followed": result.rewards * 2}
        collector.add(result)
    details = collector.result().details
    np.testing.assert_array_equal(details["followed"][:, 0], [0, 2, 4])


@pytest.mark.parametrize(
    "cores, parts, expected",
    [
        ([0, 1], 2, [[0], [1]]),
        ([0, 1], 1, [[0, 1]]),
        (list(range(8)), 2, [[0, 1, 2, 3], [4, 5, 6, 7]]),
        (list(range(7)), 3, [[0, 1, 2], [3, 4], [5, 6]]),
        ([4, 0, 2, 6], 2, [[0, 2], [4, 6]]),
    ],
)
def test_split_cores_into_disjoint_contiguous_parts(cores, parts, expected):
    assert split_cores(cores, parts) == expected


def test_split_cores_names_both_numbers_when_workers_exceed_cores():
    with pytest.raises(PoolError, match=r"engine.workers=3 .* only 2 core"):
        split_cores([0, 1], 3)


def test_cpu_list_uses_vllm_syntax():
    assert [cpu_list(c) for c in ([0], [0, 1, 2, 3], [0, 1, 2, 3, 6], [1, 3])] == ["0", "0-3", "0-3,6", "1,3"]


def test_each_cpu_actor_gets_its_own_cores_and_threads(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)  # a user's own binding wins
    options = actor_options(0, 2, list(range(8)), 8, {"A": "1"})
    assert [o["num_cpus"] for o in options] == [4, 4]
    envs = [o["runtime_env"]["env_vars"] for o in options]
    assert [e["VLLM_CPU_OMP_THREADS_BIND"] for e in envs] == ["0-3", "4-7"]
    assert [e["OMP_NUM_THREADS"] for e in envs] == ["4", "4"] and all(e["A"] == "1" for e in envs)
    assert actor_options(0, 1, list(range(8)), 8, {})[0]["num_cpus"] == 8  # one engine: every CPU
    # ... bound to all of them on a small machine (vLLM would keep one for its scheduler), its own way above
    assert actor_options(0, 1, [0, 1], 2, {})[0]["runtime_env"]["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in actor_options(0, 1, list(range(8)), 8, {})[0]["runtime_env"]["env_vars"]
    assert actor_options(2, 1, [0], 1, {}) == [dict(num_gpus=1, num_cpus=1, runtime_env={"env_vars": {}})] * 2


def test_workers_with_gpus_is_a_config_error(files):
    from essa.config import validate

    with pytest.raises(ConfigError, match=r"engine.workers=2 with engine.gpus=1"):
        validate(make_config(files, gpus=1, workers=2))


# --- the pool on Ray ----------------------------------------------------------------------------

on_ray = pytest.mark.usefixtures("ray_cluster")


@on_ray
@pytest.mark.parametrize("workers", [1, 2])
def test_scores_come_back_in_candidate_order(files, workers):
    cfg = make_config(files, workers=workers)
    with open_pool(cfg) as pool:
        assert len(pool.actors) == workers
        for generation, popsize in enumerate([1, 5, 8]):
            x = candidates(popsize, seed=generation)
            result = pool.evaluate(x, "train", INDICES, generation=generation)
            assert result.rewards.shape == (popsize, len(INDICES))
            np.testing.assert_allclose(result.scores, expected_scores(cfg, x), rtol=0, atol=1e-9)
            assert result.tokens.shape == (popsize,) and (result.tokens > 0).all()
        base = pool.evaluate(None, "train", INDICES)
        np.testing.assert_allclose(base.scores, expected_scores(cfg, None), rtol=0, atol=1e-9)
        if workers == 2:  # each CPU actor got its own core and one thread
            parts = split_cores(sorted(os.sched_getaffinity(0))[:2], 2)
            assert [actor_env(a, "VLLM_CPU_OMP_THREADS_BIND") for a in pool.actors] == [cpu_list(p) for p in parts]
            assert [actor_env(a, "OMP_NUM_THREADS") for a in pool.actors] == ["1", "1"]
        items = 3 if workers == 1 else 1 + 3 + 4  # popsize 1, 5, 8 cut for two actors
        assert pool.stats == dict(
            items=items + 1, dropped_stale=0, dropped_duplicate=0, restarts=0, timeouts=0, retries=0
        )


@on_ray
@pytest.mark.parametrize("workers", [1, 2])
def test_actor_crash_mid_generation_is_retried_with_identical_scores(files, tmp_path, workers):
    cfg, marker = make_config(files, workers=workers), tmp_path / "crash"
    x = candidates(8, seed=1)
    with open_pool(cfg, ESSA_FAKE_MARKER=str(marker)) as pool:
        clean = pool.evaluate(x, "train", INDICES, generation=0)
        marker.write_text("crash")
        faulty = pool.evaluate(x, "train", INDICES, generation=1)
        assert not marker.exists(), "no actor ran the crash"
        np.testing.assert_array_equal(faulty.rewards, clean.rewards)
        np.testing.assert_array_equal(faulty.tokens, clean.tokens)
        assert pool.stats["restarts"] == 1 and pool.stats["retries"] == 1
        nxt = candidates(8, seed=2)  # the pool keeps working for the next generation
        np.testing.assert_allclose(pool.evaluate(nxt, "train", INDICES, 2).scores, expected_scores(cfg, nxt), atol=1e-9)


@on_ray
def test_actor_killed_while_items_are_in_flight(files):
    import ray

    cfg = make_config(files, workers=2)
    x = candidates(8, seed=3)
    with open_pool(cfg, ESSA_FAKE_DELAY_S="0.6") as pool:
        clean = pool.evaluate(x, "train", INDICES, generation=0)  # 4 items of 2, about 0.6 s each
        victim = pool.actors[0]
        killer = threading.Timer(0.3, lambda: ray.kill(victim, no_restart=True))
        killer.start()
        faulty = pool.evaluate(x, "train", INDICES, generation=1)
        killer.join()
        np.testing.assert_array_equal(faulty.rewards, clean.rewards)
        np.testing.assert_array_equal(faulty.tokens, clean.tokens)
        assert pool.stats["restarts"] == 1
        assert victim not in pool.actors
        again = pool.evaluate(x, "train", INDICES, generation=2)
        np.testing.assert_array_equal(again.rewards, clean.rewards)
        assert pool.stats["restarts"] == 1


@on_ray
def test_a_replacement_that_fails_to_start_is_replaced_again_with_identical_scores(files, tmp_path):
    cfg, crash, start = make_config(files), tmp_path / "crash", tmp_path / "start"
    x = candidates(6, seed=7)
    with open_pool(cfg, ESSA_FAKE_MARKER=str(crash), ESSA_FAKE_START_MARKER=str(start)) as pool:
        clean = pool.evaluate(x, "train", INDICES, generation=0)
        start.write_text("once")  # the crashed actor's replacement fails to load its engine
        crash.write_text("crash")
        faulty = pool.evaluate(x, "train", INDICES, generation=1)
        assert not start.exists(), "no replacement tried to start"
        np.testing.assert_array_equal(faulty.rewards, clean.rewards)
        assert pool.stats["restarts"] == 2 and pool.stats["retries"] == 1


@on_ray
def test_when_every_replacement_fails_to_start_the_error_names_the_engine_and_its_cause(files, tmp_path):
    cfg, crash, start = make_config(files, max_retries=1), tmp_path / "crash", tmp_path / "start"
    with open_pool(cfg, ESSA_FAKE_MARKER=str(crash), ESSA_FAKE_START_MARKER=str(start)) as pool:
        pool.evaluate(candidates(4, seed=8), "train", INDICES, generation=0)
        start.write_text("always")
        crash.write_text("crash")
        with pytest.raises(PoolError) as failure:
            pool.evaluate(candidates(4, seed=8), "train", INDICES, generation=1)
        message = str(failure.value)
        for part in (
            "inference engine 0 failed to start",
            "the fake engine failed to load (always)",
            "engine.max_retries=1",
        ):
            assert part in message, f"{part!r} missing from: {message}"
        assert pool.stats["restarts"] == 2  # the crash's replacement, then one more try


@on_ray
def test_engine_system_error_is_retried_on_a_fresh_actor(files, tmp_path):
    cfg, marker = make_config(files), tmp_path / "raise"
    marker.write_text("raise RuntimeError: engine core died")
    x = candidates(5, seed=4)
    with open_pool(cfg, ESSA_FAKE_MARKER=str(marker)) as pool:
        result = pool.evaluate(x, "train", INDICES, generation=0)
        np.testing.assert_allclose(result.scores, expected_scores(cfg, x), atol=1e-9)
        assert pool.stats["restarts"] == 1 and pool.stats["retries"] == 1


@on_ray
def test_slow_item_times_out_and_is_retried(files, tmp_path):
    cfg, marker = make_config(files, timeout_s=2.0), tmp_path / "slow"
    marker.write_text("sleep 60")
    x = candidates(4, seed=5)
    with open_pool(cfg, ESSA_FAKE_MARKER=str(marker)) as pool:
        started = time.monotonic()
        result = pool.evaluate(x, "train", INDICES, generation=0)
        assert time.monotonic() - started < 40  # the stuck actor was not waited for
        np.testing.assert_allclose(result.scores, expected_scores(cfg, x), atol=1e-9)
        assert pool.stats["timeouts"] == 1 and pool.stats["restarts"] == 1


@on_ray
def test_always_slow_item_raises_naming_the_item_and_the_timeout_key(files):
    cfg = make_config(files, timeout_s=1.5, max_retries=1)
    with open_pool(cfg, ESSA_FAKE_DELAY_S="60") as pool:
        started = time.monotonic()
        with pytest.raises(PoolError) as failure:
            pool.evaluate(candidates(3, seed=6), "train", INDICES, generation=4)
        assert time.monotonic() - started < 40  # returned, long before the fake's 60 s
        message = str(failure.value)
        for part in ("work item 0", "generation 4", "failed 2 times", "engine.timeout_s", "engine.max_retries"):
            assert part in message, f"{part!r} missing from: {message}"
        assert pool.stats["timeouts"] == 2


@on_ray
@pytest.mark.parametrize(
    "reward, env, original",
    [
        ("explode", {}, "reward exploded on purpose"),
        ("score", {"ESSA_FAKE_RAISE": "ValueError: engine refused the batch"}, "engine refused the batch"),
    ],
    ids=["reward-error", "engine-value-error"],
)
def test_user_errors_are_raised_without_retries(files, reward, env, original):
    cfg = make_config(files, reward=reward, workers=2)
    with open_pool(cfg, **env) as pool:
        with pytest.raises(PoolError, match=original):
            pool.evaluate(candidates(4, seed=7), "train", INDICES, generation=0)
        assert pool.stats["restarts"] == 0 and pool.stats["retries"] == 0


@on_ray
def test_after_a_user_error_the_next_call_drops_the_failed_calls_leftovers(files, tmp_path):
    cfg, marker = make_config(files, workers=2), tmp_path / "raise"
    marker.write_text("raise ValueError: bad input once")
    x = candidates(4, seed=8)
    with open_pool(cfg, ESSA_FAKE_MARKER=str(marker), ESSA_FAKE_DELAY_S="1.0") as pool:
        with pytest.raises(PoolError, match="bad input once"):
            pool.evaluate(x, "train", INDICES, generation=0)  # fails fast; the other actor is still busy
        result = pool.evaluate(x, "train", INDICES, generation=0)  # same generation number, new call
        np.testing.assert_allclose(result.scores, expected_scores(cfg, x), atol=1e-9)
        assert pool.stats["dropped_stale"] == 1 and pool.stats["restarts"] == 0


def test_cpu_engines_that_do_not_fit_in_ram_are_refused_with_the_keys_to_change():
    from essa.workers.placement import ENGINE_RUNTIME_GIB, available_memory_gib, cpu_memory_problem

    per_engine = 2.0 + 0.25 + ENGINE_RUNTIME_GIB
    assert cpu_memory_problem(2, 2.0, 0.25, available_gib=2 * per_engine + 0.1) is None
    assert cpu_memory_problem(2, 2.0, 0.25, available_gib=None) is None  # unknown: not refused
    problem = cpu_memory_problem(4, 2.0, 0.25, available_gib=2 * per_engine)
    assert problem and f"{4 * per_engine:.1f} GiB" in problem
    assert "engine.workers" in problem and "engine.kv_cache_gib" in problem
    assert available_memory_gib() > 0  # this machine reports MemAvailable


@on_ray
def test_a_pool_too_large_for_ram_fails_before_starting_any_engine(files):
    with pytest.raises(PoolError, match="engine.kv_cache_gib"):
        with open_pool(make_config(files, workers=2, kv_cache_gib=10_000.0)):
            pass
