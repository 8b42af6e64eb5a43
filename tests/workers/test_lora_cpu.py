"""The grouped CPU multi-LoRA ops give what vLLM's per-token torch ops give (no engine, no model)."""

from __future__ import annotations

import pytest
import torch

from essa.workers import lora_cpu

# (token -> adapter slot, -1: none; whether the groups go through one padded bmm or a loop)
CASES = {
    "runs": ([0, 0, 0, 1, 1, 2], False),
    "split-runs": ([2, 2, -1, 0, 0, 2, 1, -1], False),  # a finished request's place refilled
    "no-adapter": ([-1, -1], False),
    "one-token": ([3], False),
    "equal-groups": ([0, 0, 1, 1, 3, 3, 2, 2], True),  # a decode step: B sequences per candidate
    "padded-groups": ([1, 1, 1, 1, 0, 0, -1, 0, 0, 2, 2, 2, 1], True),  # sizes 5, 4, 3 padded to 5
}


@pytest.mark.parametrize("indices, batched", CASES.values(), ids=CASES.keys())
def test_grouped_shrink_and_expand_match_vllm(indices, batched):
    from vllm.lora.ops.torch_ops import bgmv_expand_slice, bgmv_shrink

    g = torch.Generator().manual_seed(0)
    tokens, dim, rank, loras, out, offset = len(indices), 32, 8, 4, 24, 5
    x = torch.randn(tokens, dim, generator=g).bfloat16()
    a = torch.randn(loras, 1, rank, dim, generator=g).bfloat16()
    b = torch.randn(loras, 1, out, rank, generator=g).bfloat16()
    idx = torch.tensor(indices)
    assert (lora_cpu._groups(idx).padded is not None) == batched
    has = idx >= 0  # vLLM's ops gather slot -1 (the last) for tokens without an adapter: compare the others

    ours, theirs = torch.zeros(tokens, rank), torch.zeros(tokens, rank)
    lora_cpu.lora_shrink(ours, x, a, idx, 0.5)
    bgmv_shrink(x, a, theirs, idx, 0.5)
    torch.testing.assert_close(ours[has], theirs[has], rtol=1e-5, atol=1e-5)
    assert (ours[~has] == 0).all()

    base = torch.randn(tokens, offset + out + 3, generator=g).bfloat16()
    for add in (True, False):
        y_ours, y_theirs = base.clone(), base.clone()
        lora_cpu.lora_expand(y_ours, theirs, b, idx, offset, out, add)
        bgmv_expand_slice(theirs, b, y_theirs, idx, offset, out, add)
        torch.testing.assert_close(y_ours[has], y_theirs[has], rtol=1e-2, atol=1e-2)
        assert torch.equal(y_ours[~has], base[~has])  # untouched
