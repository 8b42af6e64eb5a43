"""The real vLLM engine in merge mode: candidates are isolated from each other and from the base.

A module-scoped engine (embedded model, CPU) scores the same prompts under several candidates.
Greedy decoding is deterministic here, so completions must match exactly whenever the weights do.
"""

from __future__ import annotations

import numpy as np
import pytest

from essa.model.adapters import principal_init, read_base_weights
from essa.model.provision import resolve_model
from essa.model.svd_lora import SVDLoRA

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# Long enough to fill whole KV-cache blocks, which is what the prefix cache keeps.
CONTEXT = " ".join(f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(40))
PROMPTS = [f"{CONTEXT}\nThe capital of France is", f"{CONTEXT}\nQuestion: what is 12 + 30?\nAnswer:"]
SAMPLING = {"temperature": 0.0, "max_tokens": 24}


@pytest.fixture(scope="module")
def engine():
    from essa.workers.engine import EngineOptions, VLLMEngine

    model_dir = resolve_model("smollm2-135m-instruct")
    base = read_base_weights(model_dir, ["q_proj", "k_proj", "v_proj", "o_proj"])
    basis = SVDLoRA.from_lora(principal_init(base, rank=8, scale=0.05), rank=8, lora_alpha=8)
    # Eager: a compiled start took 206 s of the suite's time on a 2-core machine; merge under torch.compile
    # is left to scripts/bench_throughput.py (which compiles unless told --enforce-eager).
    eng = VLLMEngine(EngineOptions(model_dir=str(model_dir), mode="merge", kv_cache_gib=1, enforce_eager=True), basis)
    yield eng
    eng.close()


def texts(engine, vectors):
    completions, timings = engine.generate(PROMPTS, SAMPLING, vectors)
    assert timings["generate"] > 0
    return [[c.text for c in row] for row in completions]


def candidates(basis: SVDLoRA, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, basis.dim)) * basis.step_scales() * 3.0


def test_candidates_change_the_output_and_base_is_restored_exactly(engine):
    before = texts(engine, None)[0]
    x = candidates(engine.basis, 2, seed=0)
    moved = texts(engine, x)
    assert moved[0] != before or moved[1] != before, "large candidates left every completion unchanged"
    assert texts(engine, None)[0] == before  # rebuilt from the kept W0: nothing drifted


def test_no_candidate_reads_kv_cached_under_another_candidates_weights(engine):
    # vLLM's prefix cache keys on tokens, not weights. The prompts share a long prefix (whole KV
    # blocks), so without a cache reset after each merge every candidate after the first would
    # reuse prefix KV computed under earlier weights (seen here: 384 of 503 prompt tokens).
    x = candidates(engine.basis, 3, seed=1)
    # Within one candidate a later prompt may reuse an earlier prompt's blocks (same weights);
    # each candidate's first prompt may not reuse anything.
    completions, _ = engine.generate(PROMPTS, SAMPLING, x)
    assert [row[0].cached_prompt_tokens for row in completions] == [0] * len(x)


def test_zero_vector_is_the_warm_start_not_the_base(engine):
    zero = texts(engine, np.zeros((1, engine.basis.dim)))[0]
    again = texts(engine, np.zeros((1, engine.basis.dim)))[0]
    assert zero == again
