"""The grouped CPU multi-LoRA ops give what vLLM's per-token torch ops give (no engine, no model)."""

from __future__ import annotations

import pytest
import torch

from essa.workers.engine import lora_grouped

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
    assert (lora_grouped._groups(idx).padded is not None) == batched
    has = idx >= 0  # vLLM's ops gather slot -1 (the last) for tokens without an adapter: compare the others

    ours, theirs = torch.zeros(tokens, rank), torch.zeros(tokens, rank)
    lora_grouped.lora_shrink(ours, x, a, idx, 0.5)
    bgmv_shrink(x, a, theirs, idx, 0.5)
    torch.testing.assert_close(ours[has], theirs[has], rtol=1e-5, atol=1e-5)
    assert (ours[~has] == 0).all()

    base = torch.randn(tokens, offset + out + 3, generator=g).bfloat16()
    for add in (True, False):
        y_ours, y_theirs = base.clone(), base.clone()
        lora_grouped.lora_expand(y_ours, theirs, b, idx, offset, out, add)
        bgmv_expand_slice(theirs, b, y_theirs, idx, offset, out, add)
        torch.testing.assert_close(y_ours[has], y_theirs[has], rtol=1e-2, atol=1e-2)
        assert torch.equal(y_ours[~has], base[~has])  # untouched


# (token -> adapter slot; whether the step takes the dense path: G contiguous equal runs, one per adapter)
LINEAR_CASES = {
    "dense-in-slot-order": ([0, 0, 0, 1, 1, 1, 2, 2, 2], True),
    "dense-slots-shuffled": ([3, 3, 0, 0, 2, 2], True),
    "one-adapter": ([1, 1, 1, 1], True),
    "unequal-runs": ([0, 0, 0, 1, 1, 2], False),
    "interleaved-equal": ([0, 0, 1, 1, 0, 0, 1, 1], False),  # the padded per-slice path
    "split-runs": ([2, 2, -1, 0, 0, 2, 1, -1], False),
    "no-adapter": ([-1, -1, -1], False),
}


@pytest.mark.parametrize("indices, dense", LINEAR_CASES.values(), ids=LINEAR_CASES.keys())
@pytest.mark.parametrize("slices", [(24,), (24, 8, 8)], ids=["o_proj", "qkv"])
def test_fused_lora_linear_matches_vllms_shrink_then_expand_per_slice(indices, dense, slices):
    from vllm.lora.ops.torch_ops import bgmv_expand_slice, bgmv_shrink

    g = torch.Generator().manual_seed(1)
    tokens, dim, rank, loras = len(indices), 32, 8, 4
    x = torch.randn(tokens, dim, generator=g).bfloat16()
    a = [torch.randn(loras, 1, rank, dim, generator=g).bfloat16() for _ in slices]
    b = [torch.randn(loras, 1, size, rank, generator=g).bfloat16() for size in slices]
    idx = torch.tensor(indices)
    assert (lora_grouped._groups(idx).dense is not None) == dense
    base = torch.randn(tokens, sum(slices), generator=g).bfloat16()

    ours, theirs = base.clone(), base.clone()
    lora_grouped.lora_linear(ours, x, a, b, idx, 0.5, list(slices), torch.zeros(0, dtype=torch.long))
    offset = 0
    for a_i, b_i, size in zip(a, b, slices):  # vLLM's add_lora_linear on its own ops
        buffer = torch.zeros(tokens, rank)
        bgmv_shrink(x, a_i, buffer, idx, 0.5)
        bgmv_expand_slice(buffer, b_i, theirs, idx, offset, size, True)
        offset += size
    has = idx >= 0
    torch.testing.assert_close(ours[has], theirs[has], rtol=2e-2, atol=5e-2)
    assert torch.equal(ours[~has], base[~has])
    if has.any():
        assert not torch.equal(ours[has], base[has])  # the adapters did change the output
