"""The shared-basis LoRA path gives what vLLM's per-adapter ops give, and steps aside when it cannot.

No engine: a layer here is its stacked LoRA weights as vLLM keeps them (bf16, B with the scaling
folded in, rank padded to the slot size), filled with candidates of one SVD basis.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from essa.workers.engine import lora_grouped
from essa.workers.engine import lora_shared_basis as shared

IN, RANK, SCALING = 32, 4, 2.0


def _orthonormal(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g))
    return q


def _basis(sizes, present, g):
    return [
        shared.SliceBasis(
            _orthonormal(RANK, RANK, g),
            _orthonormal(IN, RANK, g).t().contiguous(),
            _orthonormal(size, RANK, g),
            _orthonormal(RANK, RANK, g),
        )
        if on
        else None
        for size, on in zip(sizes, present)
    ]


def _layer(sizes, slots, max_rank):
    """A vLLM LoRA layer's stacked weights (all slots empty)."""
    return SimpleNamespace(
        lora_a_stacked=tuple(torch.zeros(slots, 1, max_rank, IN, dtype=torch.bfloat16) for _ in sizes),
        lora_b_stacked=tuple(torch.zeros(slots, 1, size, max_rank, dtype=torch.bfloat16) for size in sizes),
        output_slices=tuple(sizes),
    )


def _load(layer, slot, slices, g):
    """vLLM's set_lora for a candidate of the basis: A = U_A diag(a) V_Aᵀ, B = scaling · U_B diag(b) V_Bᵀ."""
    for i, part in enumerate(slices):
        layer.lora_a_stacked[i][slot].zero_()
        layer.lora_b_stacked[i][slot].zero_()
        if part is None:
            continue
        a, b = torch.rand(RANK, generator=g) + 0.5, torch.rand(RANK, generator=g) + 0.5
        layer.lora_a_stacked[i][slot, 0, :RANK] = ((part.u_a * a) @ part.vt_a).bfloat16()
        layer.lora_b_stacked[i][slot, 0, :, :RANK] = (SCALING * (part.u_b * b) @ part.vt_b).bfloat16()


def _vllm_reference(y, x, layer, idx, scale=1.0):
    """vLLM's add_lora_linear on its own torch ops."""
    from vllm.lora.ops.torch_ops import bgmv_expand_slice, bgmv_shrink

    offset = 0
    for a_i, b_i, size in zip(layer.lora_a_stacked, layer.lora_b_stacked, layer.output_slices):
        buffer = torch.zeros(len(idx), a_i.shape[-2])
        bgmv_shrink(x, a_i, buffer, idx, scale)
        bgmv_expand_slice(buffer, b_i, y, idx, offset, size, True)
        offset += size


@pytest.fixture(autouse=True)
def _clean_registry():
    shared.clear()
    yield
    shared.clear()


LAYERS = {
    "o_proj": ((24,), (True,), 4),
    "qkv": ((24, 8, 8), (True, True, True), 4),
    "qkv-padded-rank": ((24, 8, 8), (True, True, True), 8),  # vLLM's slot rank above the basis rank
    "q-and-v-only": ((24, 8, 8), (True, False, True), 4),  # k_proj not adapted: its slice stays zero
}


# token -> slot, and whether the step is dense (contiguous equal runs: the per-adapter r×r bmm)
STEPS = {
    "decode": ([0, 0, 0, 1, 1, 1, 2, 2, 2], True),
    "decode-slots-shuffled": ([2, 2, 0, 0, 1, 1], True),
    "mixed": ([2, 2, -1, 0, 0, 2, 1, -1], False),  # the per-token scale table
}


@pytest.mark.parametrize("sizes, present, max_rank", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("indices, dense", STEPS.values(), ids=STEPS.keys())
def test_shared_basis_matches_vllms_ops(sizes, present, max_rank, indices, dense, monkeypatch):
    calls = []
    add = shared.LayerBasis.add
    monkeypatch.setattr(
        shared.LayerBasis, "add", lambda self, *args: calls.append(args[3] is not None) or add(self, *args)
    )
    g = torch.Generator().manual_seed(0)
    slices = _basis(sizes, present, g)
    layer = _layer(sizes, slots=4, max_rank=max_rank)
    for slot in range(3):
        _load(layer, slot, slices, g)
    shared.register_basis(layer.lora_a_stacked[0], shared.layer_basis(layer, slices, RANK))
    idx = torch.tensor(indices)
    x = torch.randn(len(indices), IN, generator=g).bfloat16()
    base = torch.randn(len(indices), sum(sizes), generator=g).bfloat16()

    ours, theirs = base.clone(), base.clone()
    lora_grouped.lora_linear(
        ours,
        x,
        list(layer.lora_a_stacked),
        list(layer.lora_b_stacked),
        idx,
        1.0,
        list(sizes),
        torch.tensor([11, 12, 13, 0]),
    )
    assert calls == [dense]  # the shared basis did the layer, on the expected path
    _vllm_reference(theirs, x, layer, idx)
    has = idx >= 0
    torch.testing.assert_close(ours[has].float(), theirs[has].float(), rtol=2e-2, atol=3e-2)
    assert torch.equal(ours[~has], base[~has])  # tokens without an adapter untouched
    assert not torch.equal(ours[has], base[has])
    if len(present) == 3 and not present[1]:  # the k slice has no adapter: unchanged for every token
        assert torch.equal(ours[:, 24:32], base[:, 24:32])


def test_foreign_adapter_falls_back_until_its_slot_is_refilled():
    g = torch.Generator().manual_seed(2)
    sizes = (24, 8, 8)
    slices = _basis(sizes, (True, True, True), g)
    layer = _layer(sizes, slots=3, max_rank=RANK)
    _load(layer, 0, slices, g)
    for a_i, b_i in zip(layer.lora_a_stacked, layer.lora_b_stacked):  # slot 1: an adapter from elsewhere
        a_i[1].copy_(torch.randn(a_i[1].shape, generator=g))
        b_i[1].copy_(torch.randn(b_i[1].shape, generator=g))
    shared.register_basis(layer.lora_a_stacked[0], shared.layer_basis(layer, slices, RANK))
    a, b = list(layer.lora_a_stacked), list(layer.lora_b_stacked)
    idx = torch.tensor([0, 0, 1, 1])
    x = torch.randn(4, IN, generator=g).bfloat16()
    y = torch.zeros(4, sum(sizes), dtype=torch.bfloat16)

    assert not shared.try_add(y, x, a, b, idx + 1, torch.tensor([5, 6, 0]), 1.0)
    assert not y.any()  # nothing written: the caller's grouped path does the whole layer

    # the full op still gives vLLM's answer, through the grouped path
    ours, theirs = y.clone(), y.clone()
    lora_grouped.lora_linear(ours, x, a, b, idx, 1.0, list(sizes), torch.tensor([5, 6, 0]))
    _vllm_reference(theirs, x, layer, idx)
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=2e-2, atol=5e-2)

    _load(layer, 1, slices, g)  # vLLM refills slot 1 with a candidate (a new adapter id)
    assert shared.try_add(y, x, a, b, idx + 1, torch.tensor([5, 7, 0]), 1.0)
    theirs = torch.zeros_like(y)
    _vllm_reference(theirs, x, layer, idx)
    torch.testing.assert_close(y.float(), theirs.float(), rtol=2e-2, atol=3e-2)


def test_scales_are_reprojected_when_a_slot_changes_adapter():
    g = torch.Generator().manual_seed(3)
    sizes = (24,)
    slices = _basis(sizes, (True,), g)
    layer = _layer(sizes, slots=2, max_rank=RANK)
    _load(layer, 0, slices, g)
    shared.register_basis(layer.lora_a_stacked[0], shared.layer_basis(layer, slices, RANK))
    a, b = list(layer.lora_a_stacked), list(layer.lora_b_stacked)
    idx, x = torch.tensor([0, 0]), torch.randn(2, IN, generator=g).bfloat16()

    first = torch.zeros(2, 24, dtype=torch.bfloat16)
    assert shared.try_add(first, x, a, b, idx + 1, torch.tensor([1, 0]), 1.0)
    _load(layer, 0, slices, g)  # another candidate in slot 0
    second = torch.zeros(2, 24, dtype=torch.bfloat16)
    assert shared.try_add(second, x, a, b, idx + 1, torch.tensor([2, 0]), 1.0)
    expected = torch.zeros(2, 24, dtype=torch.bfloat16)
    _vllm_reference(expected, x, layer, idx)
    torch.testing.assert_close(second.float(), expected.float(), rtol=2e-2, atol=3e-2)
    assert not torch.allclose(first.float(), second.float(), atol=1e-2)  # stale scales would repeat the first


def test_unregistered_layer_or_unknown_slots_use_the_grouped_path():
    g = torch.Generator().manual_seed(4)
    layer = _layer((24,), slots=2, max_rank=RANK)
    a, b = list(layer.lora_a_stacked), list(layer.lora_b_stacked)
    y, x = torch.zeros(2, 24, dtype=torch.bfloat16), torch.randn(2, IN, generator=g).bfloat16()
    assert not shared.try_add(y, x, a, b, torch.tensor([1, 1]), torch.tensor([1, 0]), 1.0)
    shared.register_basis(layer.lora_a_stacked[0], shared.layer_basis(layer, _basis((24,), (True,), g), RANK))
    assert not shared.try_add(y, x, a, b, torch.tensor([1, 1]), torch.zeros(0, dtype=torch.long), 1.0)
