"""The real vLLM engine in lora mode on CPU: the shared-basis LoRA scores candidates as vLLM's own ops do.

Engines on the embedded model, one after the other: essa's default CPU kernel (every candidate
through the basis' shared matmuls) and vLLM's own torch LoRA ops. Each scores the same prompts
under the same candidates teacher-forced (`prompt_logprobs`: the log-probability of every prompt
token), which compares the weights' effect token by token with no greedy divergence.

In float32 the two must agree to rounding (measured: 3e-6 to 7e-6 nats per token on average,
against 0.8 to 3 between candidates). In bf16 they round differently: vLLM rounds each adapter's
A and B to bf16, the shared path rounds the basis' V_A and U_B, so they differ by bf16 noise
(measured: 0.03 to 0.06 nats on average; vLLM's ops against essa's grouped ops, which read the
same bf16 A and B: 0.01). The suite runs float32 only, the check to rounding (the bf16 case cost
97 s more and holds the kernel to far less; bf16, the default dtype, runs the shared kernel in
every lora-mode end-to-end test); ESSA_TEST_BF16_LORA=1 runs it too.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from essa.model.adapters import principal_init, read_base_weights
from essa.model.provision import resolve_model
from essa.model.svd_lora import SVDLoRA

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PROMPTS = [
    "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.",
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer: 3 + 5 = 8.",
]
SCORE = {"temperature": 0.0, "max_tokens": 1, "prompt_logprobs": 0}


def _scores(
    kernel: str, basis: SVDLoRA, vectors: np.ndarray, model_dir, dtype: str = "bfloat16"
) -> tuple[np.ndarray, int]:
    """(candidates, prompt tokens) log-probabilities, concatenated over the prompts; and the shared layers."""
    from essa.workers.engine import EngineOptions, VLLMEngine

    engine = VLLMEngine(
        EngineOptions(
            model_dir=str(model_dir),
            dtype=dtype,
            mode="lora",
            lora_kernel=kernel,
            kv_cache_gib=1,
            enforce_eager=True,
            max_loras=len(vectors),
        ),
        basis,
    )
    try:
        rows, _ = engine.generate(PROMPTS, SCORE, vectors)
        return np.array([[lp for c in row for lp in c.prompt_logprobs] for row in rows]), engine.shared_basis_layers
    finally:
        engine.close()


@pytest.mark.parametrize(
    "dtype",
    [
        "float32",
        pytest.param(
            "bfloat16",
            marks=pytest.mark.skipif(
                not os.environ.get("ESSA_TEST_BF16_LORA"), reason="bf16 case: set ESSA_TEST_BF16_LORA=1 (97 s more)"
            ),
        ),
    ],
)
def test_shared_basis_kernel_scores_every_candidate_like_vllms_lora_ops(dtype):
    model_dir = resolve_model("smollm2-135m-instruct")
    base = read_base_weights(model_dir, ["q_proj", "k_proj", "v_proj", "o_proj"])
    basis = SVDLoRA.from_lora(principal_init(base, rank=8, scale=0.05), rank=8, lora_alpha=8)
    rng = np.random.default_rng(0)
    vectors = np.vstack([np.zeros(basis.dim), rng.normal(size=(3, basis.dim)) * basis.step_scales() * 3.0])

    shared, layers = _scores("shared", basis, vectors, model_dir, dtype)
    reference, none = _scores("vllm", basis, vectors, model_dir, dtype)

    assert layers == 60 and none == 0  # 30 decoder layers × (qkv_proj, o_proj) went through the basis
    assert np.isfinite(shared).all() and shared.shape == reference.shape
    gap = np.abs(shared - reference).mean(axis=1)  # per candidate, nats per prompt token
    between = np.abs(reference[1:] - reference[0]).mean(axis=1)  # how far candidates move from the warm start
    assert between.min() > 0.3, f"candidates barely differ ({between}): the comparison would prove little"
    limit = 1e-4 if dtype == "float32" else 0.15 * between.min()
    assert (gap < limit).all(), (
        f"{dtype}: shared basis vs vLLM's LoRA ops differ by {gap} nats/token (limit {limit:.2g})"
    )
