"""The rollout pool with the REAL engine: an actor's process killed mid-generation.

One pool (one CPU actor, vLLM in merge mode, eager for a fast start) scores a few candidates
fault-free; then the same candidates again while the actor's process is SIGKILLed halfway
through. The pool must replace the actor, retry the item and return exactly the same rewards:
greedy decoding with vLLM's engine core in the actor's process (engine.deterministic, the default)
batches the same way whatever the timing, and the reward below is a fingerprint of each
completion's text, so equal rewards mean equal completions. (With the engine core in its own
process, this failed on a loaded CI machine: the retried candidate's first call on the fresh actor
batched differently and 2 of its 4 completions changed.) Nothing the killed actor started may
outlive it, nor may anything outlive `pool.shutdown()`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

INDICES = [0, 1, 2, 3]
# A fingerprint of the completion's exact text in [0, 1): equal rewards <=> equal completions.
REWARD = """
import hashlib

def fingerprint(completion, example):
    return int(hashlib.sha256(completion.encode()).hexdigest()[:12], 16) / 16**12
"""


def pid_of(actor) -> int:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda _worker: os.getpid()))


def descendants(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """The pids still running (zombies count as gone) after waiting up to `seconds`."""
    import psutil

    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.5)


def describe(pids: list[int]) -> str:
    import psutil

    out = []
    for pid in pids:
        try:
            out.append(f"{pid} {psutil.Process(pid).name()} {' '.join(psutil.Process(pid).cmdline())[:80]}")
        except psutil.NoSuchProcess:
            pass
    return "; ".join(out)


def test_real_engine_actor_killed_mid_generation_is_retried_with_identical_scores(ray_cluster, tmp_path: Path):
    from essa.config import Config
    from essa.model.adapters import principal_init, read_base_weights
    from essa.model.provision import resolve_model
    from essa.model.svd_lora import SVDLoRA
    from essa.run.rollout_pool import pool_from_config

    (tmp_path / "reward.py").write_text(REWARD)
    cfg = Config()
    cfg.task.name, cfg.task.reward = "gsm8k", f"{tmp_path / 'reward.py'}:fingerprint"
    cfg.search.popsize = 4
    cfg.generation.max_new_tokens = 24
    cfg.engine.enforce_eager, cfg.engine.kv_cache_gib = True, 1.0
    cfg.engine.mode = "merge"  # the align e2e covers lora (the default); this keeps merge under a real fault
    cfg.model.dtype = (
        "float32"  # merge in float32 (model.dtype=auto's pick on CPUs without bf16); bf16: test_engine_merge
    )
    model_dir = resolve_model(cfg.model.name)
    base = read_base_weights(model_dir, ["q_proj", "k_proj", "v_proj", "o_proj"])
    basis = SVDLoRA.from_lora(principal_init(base, rank=8, scale=0.05), rank=8, lora_alpha=8)
    x = np.random.default_rng(0).normal(size=(4, basis.dim)) * basis.step_scales() * 3.0

    pool = pool_from_config(cfg, basis)
    try:
        pool.evaluate(None, "train", INDICES)  # warm-up: the first generate call is slower
        started = time.monotonic()
        clean = pool.evaluate(x, "train", INDICES, generation=0)
        clean_s = time.monotonic() - started
        assert len(set(clean.rewards.ravel())) > 4, "candidates should change the completions"

        victim = pool.actors[0]
        pid = pid_of(victim)
        engine_pids = descendants(pid)  # none in-process; vLLM's EngineCore with engine.deterministic=false
        killed, lingered = [], []

        def kill() -> None:
            os.kill(pid, signal.SIGKILL)
            killed.append(time.monotonic())
            left = wait_gone(engine_pids, 20)  # while the pool restarts the actor
            lingered.append(time.monotonic() - killed[0] if not left else None)

        # Halfway through the generation: the actor is generating (4 candidates, one call each).
        killer = threading.Timer(clean_s / 2, kill)
        started = time.monotonic()
        killer.start()
        faulty = pool.evaluate(x, "train", INDICES, generation=1)
        killer.join()
        assert killed and killed[0] - started < clean_s, "the kill landed after the generation was done"
        assert pool.stats["restarts"] == 1 and pool.stats["retries"] == 1, pool.stats
        np.testing.assert_array_equal(faulty.rewards, clean.rewards)
        np.testing.assert_array_equal(faulty.tokens, clean.tokens)

        assert lingered[0] is not None, (
            f"the killed actor's child processes outlived it by 20 s: {describe(engine_pids)}"
        )
        print(
            f"clean {clean_s:.1f}s; killed at {killed[0] - started:.1f}s; faulty call {time.monotonic() - started:.1f}s "
            f"with the restart; the killed actor's {len(engine_pids)} child processes gone {lingered[0]:.1f}s "
            "after the kill"
        )

        survivor = pool.actors[0]
        assert survivor is not victim
        live_pids = [pid_of(survivor), *descendants(pid_of(survivor))]
    finally:
        pool.shutdown()
    left = wait_gone(live_pids, 30)
    assert not left, f"processes left after pool.shutdown(): {describe(left)}"
