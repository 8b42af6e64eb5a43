"""One search vector, one ΔW: SVDLoRA (numpy), the merge extension (torch, in place in vLLM's weights)
and the shared-basis LoRA ops (vLLM's lora mode on CPU) all read a vector through SVDLoRA.split.

A layout change in SVDLoRA that one of them did not follow would show here as a mismatch in some
module other than the first.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from essa.model.svd_lora import SVDLoRA
from essa.workers.engine import lora_grouped
from essa.workers.engine import lora_shared_basis as shared
from essa.workers.engine.extension import merge_terms, merged_delta

RANK, ALPHA = 4, 8.0
SHAPES = {  # module -> (out, in)
    "model.layers.0.self_attn.q_proj": (12, 16),
    "model.layers.0.self_attn.o_proj": (16, 12),
    "model.layers.1.self_attn.q_proj": (12, 16),
    "model.layers.10.mlp.down_proj": (16, 20),
}


@pytest.fixture(autouse=True)
def _clean_registry():
    shared.clear()
    yield
    shared.clear()


@pytest.fixture(params=[1.0, 0.5], ids=["all-values", "alpha-0.5"])
def basis_and_vector(request):
    rng = np.random.default_rng(0)
    lora = {m: (rng.normal(size=(RANK, n)), rng.normal(size=(o, RANK)) * 0.1) for m, (o, n) in SHAPES.items()}
    basis = SVDLoRA.from_lora(lora, RANK, ALPHA, alpha_fraction=request.param)
    return basis, rng.normal(size=basis.dim)


def test_merge_extension_builds_the_same_delta_as_svd_lora(basis_and_vector):
    basis, x = basis_and_vector
    expected = basis.delta(x)
    for index, ((x_a, x_b), module) in enumerate(zip(basis.split(x), basis.modules)):
        got = merged_delta(merge_terms(basis.a[index], basis.b[index]), x_a, x_b, basis.scaling)
        np.testing.assert_allclose(got.double().numpy(), expected[module], rtol=1e-4, atol=1e-5, err_msg=module)


def test_shared_basis_lora_ops_apply_the_same_delta_as_svd_lora(basis_and_vector):
    """Each module as a vLLM LoRA layer holding the candidate in slot 0 (A', scaling · B', as vLLM's
    set_lora stores them); the layer's output for the identity input is ΔWᵀ."""
    basis, x = basis_and_vector
    expected = basis.delta(x)
    factors = basis.factors(x)
    for index, module in enumerate(basis.modules):
        a, b = factors[module]
        out, width = b.shape[0], a.shape[1]
        layer = SimpleNamespace(
            lora_a_stacked=(torch.zeros(2, 1, RANK, width),),
            lora_b_stacked=(torch.zeros(2, 1, out, RANK),),
            output_slices=(out,),
        )
        layer.lora_a_stacked[0][0, 0] = torch.as_tensor(a, dtype=torch.float32)
        layer.lora_b_stacked[0][0, 0] = torch.as_tensor(basis.scaling * b, dtype=torch.float32)
        shared.register_basis(
            layer.lora_a_stacked[0],
            shared.layer_basis(layer, [shared.SliceBasis.of(basis.a[index], basis.b[index])], RANK),
        )
        y = torch.zeros(width, out)
        assert shared.try_add(
            y,
            torch.eye(width),
            list(layer.lora_a_stacked),
            list(layer.lora_b_stacked),
            torch.ones(width, dtype=torch.long),
            torch.tensor([7, 0]),
            1.0,
        ), module
        np.testing.assert_allclose(y.t().double().numpy(), expected[module], rtol=1e-4, atol=1e-5, err_msg=module)
        # and the grouped ops (adapters outside the basis) agree on the same weights
        shared.clear()
        y_grouped = torch.zeros(width, out)
        lora_grouped.lora_linear(
            y_grouped,
            torch.eye(width),
            list(layer.lora_a_stacked),
            list(layer.lora_b_stacked),
            torch.zeros(width, dtype=torch.long),
            1.0,
            [out],
            torch.zeros(0, dtype=torch.long),
        )
        np.testing.assert_allclose(y_grouped.t().double().numpy(), expected[module], rtol=1e-4, atol=1e-5)


def test_split_is_module_by_module_a_then_b():
    basis = SVDLoRA.from_lora(
        {m: (np.eye(RANK, n), np.eye(o, RANK)) for m, (o, n) in SHAPES.items()}, RANK, ALPHA, alpha_fraction=0.5
    )
    k = basis.searched
    x = np.arange(basis.dim, dtype=float)
    parts = basis.split(x)
    assert [list(p[0]) for p in parts] == [list(range(2 * k * i, 2 * k * i + k)) for i in range(len(SHAPES))]
    assert [list(p[1]) for p in parts] == [list(range(2 * k * i + k, 2 * k * (i + 1))) for i in range(len(SHAPES))]
    np.testing.assert_array_equal(basis.offsets(np.ones((3, basis.dim))), np.tile(basis.step_scales(), (3, 1)))
    with pytest.raises(ValueError, match="expected"):
        basis.offsets(np.ones(basis.dim + 1))
