"""Tests for essa.model.svd_lora: the map from a search vector to LoRA weights, step scales, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from essa.model.svd_lora import SVDLoRA


def random_lora(modules, out_dim, in_dim, rank, seed=0, zero_b=()):
    """Module → (A: rank × in, B: out × rank), random normal; modules in `zero_b` get B = 0."""
    rng = np.random.default_rng(seed)
    lora = {}
    for m in modules:
        a = rng.normal(size=(rank, in_dim))
        b = np.zeros((out_dim, rank)) if m in zero_b else rng.normal(scale=0.1, size=(out_dim, rank))
        lora[m] = (a, b)
    return lora


def layer_modules(n_layers, projections=("q_proj", "v_proj")):
    return [f"model.layers.{i}.self_attn.{p}" for i in range(n_layers) for p in projections]


def rel_err(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


SHAPES = [  # (out, in, rank, lora_alpha)
    (16, 16, 4, 8.0),
    (24, 12, 4, 4.0),
    (10, 30, 8, 16.0),
    (40, 20, 8, 32.0),
]


@pytest.mark.parametrize(("out_dim", "in_dim", "rank", "lora_alpha"), SHAPES)
def test_zero_vector_reproduces_the_adapter(out_dim, in_dim, rank, lora_alpha):
    lora = random_lora(layer_modules(2), out_dim, in_dim, rank)
    svd = SVDLoRA.from_lora(lora, rank=rank, lora_alpha=lora_alpha)
    assert svd.scaling == lora_alpha / rank
    x = np.zeros(svd.dim)
    delta, factors = svd.delta(x), svd.factors(x)
    assert set(delta) == set(lora) == set(factors)
    for m, (a, b) in lora.items():
        assert delta[m].shape == (out_dim, in_dim)
        assert rel_err(delta[m], (lora_alpha / rank) * (b @ a)) < 1e-5
        a2, b2 = factors[m]
        assert a2.shape == a.shape and b2.shape == b.shape
        assert rel_err(a2, a) < 1e-5
        assert rel_err(b2, b) < 1e-5


@pytest.mark.parametrize("rank", [4, 8])
@pytest.mark.parametrize("alpha_fraction", [1.0, 0.5, 0.3])
@pytest.mark.parametrize("n_layers", [1, 3])
def test_dim_counts_searched_singular_values(rank, alpha_fraction, n_layers):
    modules = layer_modules(n_layers)
    svd = SVDLoRA.from_lora(random_lora(modules, 12, 10, rank), rank, rank, alpha_fraction)
    k = math.floor(alpha_fraction * rank)
    assert svd.searched == k
    assert svd.dim == len(modules) * 2 * k
    assert svd.step_scales().shape == (svd.dim,)


def test_offsets_stay_in_the_span_of_the_top_k_directions():
    rank, k = 8, 4
    lora = random_lora(layer_modules(2), 20, 16, rank, seed=1)
    svd = SVDLoRA.from_lora(lora, rank, rank, alpha_fraction=0.5)
    assert svd.searched == k
    x = np.random.default_rng(2).normal(size=svd.dim)
    for i, (m, (a2, b2)) in enumerate(svd.factors(x).items()):
        a, b = lora[m]
        da, db = a2 - a, b2 - b
        assert np.linalg.norm(da) > 1e-3 and np.linalg.norm(db) > 1e-3  # x really moved them
        fa, fb = svd.a[i], svd.b[i]
        # Rows of ΔA lie in the span of the top-k right singular vectors, columns in the top-k left.
        top_v = fa.Vt[:k]
        assert np.linalg.norm(da - da @ top_v.T @ top_v) < 1e-9
        assert np.linalg.norm(da - fa.U[:, :k] @ fa.U[:, :k].T @ da) < 1e-9
        # ...and nothing along the unsearched directions.
        assert np.linalg.norm(da @ fa.Vt[k:].T) < 1e-9
        top_vb = fb.Vt[:k]
        assert np.linalg.norm(db - db @ top_vb.T @ top_vb) < 1e-9


@pytest.mark.parametrize("factor", ["A", "B"])
@pytest.mark.parametrize("module_index", [0, 2])
@pytest.mark.parametrize("d", [0.7, -0.25])
def test_known_offset_moves_one_rank_one_direction(factor, module_index, d):
    rank = 4
    lora = random_lora(layer_modules(2), 9, 7, rank, seed=3)
    svd = SVDLoRA.from_lora(lora, rank, rank)
    k = svd.searched
    x = np.zeros(svd.dim)
    x[2 * k * module_index + (0 if factor == "A" else k)] = d
    m = svd.modules[module_index]
    f = (svd.a if factor == "A" else svd.b)[module_index]
    before = svd.factors(np.zeros(svd.dim))[m][0 if factor == "A" else 1]
    after = svd.factors(x)[m][0 if factor == "A" else 1]
    expected = d * np.outer(f.U[:, 0], f.Vt[0])
    np.testing.assert_allclose(after - before, expected, rtol=0, atol=1e-9)
    # Every other module and the other factor are untouched.
    for other, (a2, b2) in svd.factors(x).items():
        a0, b0 = svd.factors(np.zeros(svd.dim))[other]
        if other != m:
            assert np.array_equal(a2, a0) and np.array_equal(b2, b0)
        else:
            untouched = b2 if factor == "A" else a2
            assert np.array_equal(untouched, b0 if factor == "A" else a0)


def test_modules_are_in_natural_layer_order():
    modules = layer_modules(12, ("q_proj", "v_proj"))
    shuffled = list(np.random.default_rng(0).permutation(modules))
    svd = SVDLoRA.from_lora(random_lora(shuffled, 6, 6, 4), 4, 4)
    assert svd.modules == modules
    assert svd.modules.index("model.layers.2.self_attn.q_proj") < svd.modules.index("model.layers.10.self_attn.q_proj")
    # The vector layout follows the same order: x's block i drives modules[i].
    x = np.zeros(svd.dim)
    x[2 * svd.searched * 2] = 1.0  # third module's A
    moved = [m for m in modules if not np.allclose(svd.delta(x)[m], svd.delta(np.zeros(svd.dim))[m])]
    assert moved == [modules[2]] == ["model.layers.1.self_attn.q_proj"]


@pytest.mark.parametrize("alpha_fraction", [1.0, 0.5])
def test_step_scales_are_rms_of_each_factors_searched_singular_values(alpha_fraction):
    rank = 8
    lora = random_lora(layer_modules(2), 12, 10, rank, seed=4)
    svd = SVDLoRA.from_lora(lora, rank, rank, alpha_fraction)
    k = svd.searched
    scales = svd.step_scales()
    assert scales.shape == (svd.dim,)
    for i, m in enumerate(svd.modules):
        a, b = lora[m]
        for j, mat in enumerate((a, b)):
            s = np.linalg.svd(mat, compute_uv=False)[:k]
            block = scales[2 * k * i + j * k : 2 * k * i + (j + 1) * k]
            np.testing.assert_allclose(block, np.sqrt(np.mean(s**2)), rtol=1e-12)
    # B (scale 0.1) and A (scale 1) get scales an order of magnitude apart.
    assert scales[k] < scales[0] / 3


def test_zero_factor_gets_a_positive_fallback_scale():
    modules = layer_modules(2)
    svd = SVDLoRA.from_lora(random_lora(modules, 8, 8, 4, zero_b={modules[1]}), 4, 4)
    k = svd.searched
    scales = svd.step_scales()
    zero_block = scales[2 * k * 1 + k : 2 * k * 2]
    assert np.all(zero_block > 0) and np.all(np.isfinite(scales))
    others = np.delete(scales, np.arange(2 * k + k, 4 * k))
    np.testing.assert_allclose(zero_block, np.sqrt(np.mean(others**2)), rtol=1e-12)
    # And the zero factor really moves when searched.
    x = np.zeros(svd.dim)
    x[3 * k] = 1.0
    assert np.linalg.norm(svd.factors(x)[modules[1]][1]) == pytest.approx(1.0)


def test_all_zero_adapter_still_has_positive_scales():
    modules = layer_modules(1)
    lora = {m: (np.zeros((4, 6)), np.zeros((5, 4))) for m in modules}
    scales = SVDLoRA.from_lora(lora, 4, 4).step_scales()
    assert np.all(scales > 0)


@pytest.fixture
def basis():
    return SVDLoRA.from_lora(random_lora(layer_modules(3), 14, 10, 8, seed=5), 8, 16.0, 0.5)


def assert_same_delta(one: SVDLoRA, two: SVDLoRA, x: np.ndarray):
    assert one.modules == two.modules
    assert (one.rank, one.lora_alpha, one.searched, one.dim) == (two.rank, two.lora_alpha, two.searched, two.dim)
    d1, d2 = one.delta(x), two.delta(x)
    for m in d1:
        assert np.array_equal(d1[m], d2[m])  # bit-identical


def test_bytes_round_trip_is_bit_identical(basis):
    x = np.random.default_rng(6).normal(size=basis.dim)
    assert_same_delta(basis, SVDLoRA.from_bytes(basis.to_bytes()), x)
    assert np.array_equal(basis.step_scales(), SVDLoRA.from_bytes(basis.to_bytes()).step_scales())


def test_save_load_round_trip_is_bit_identical(basis, tmp_path):
    path = tmp_path / "sub" / "basis.safetensors"
    basis.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["basis.safetensors"]  # no temp file left
    x = np.random.default_rng(7).normal(size=basis.dim)
    assert_same_delta(basis, SVDLoRA.load(path), x)


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated-half"),
        pytest.param(lambda data: data[:5], id="truncated-header"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: np.random.default_rng(8).bytes(len(data)), id="random-garbage"),
        pytest.param(lambda data: (12).to_bytes(8, "little") + b"{not json!!}", id="bad-header-json"),
    ],
)
def test_load_of_a_corrupt_file_raises_value_error_naming_it(basis, tmp_path, corrupt):
    path = tmp_path / "basis.safetensors"
    path.write_bytes(corrupt(basis.to_bytes()))
    with pytest.raises(ValueError) as info:
        SVDLoRA.load(path)
    assert str(path) in str(info.value)


def test_load_of_safetensors_that_is_not_a_basis_raises_value_error(tmp_path):
    from essa.io import safetensors_bytes

    path = tmp_path / "other.safetensors"
    path.write_bytes(safetensors_bytes({"w": np.zeros(3)}, {"modules": '["m"]'}))
    with pytest.raises(ValueError, match="not a valid SVD-LoRA basis") as info:
        SVDLoRA.load(path)
    assert str(path) in str(info.value)


def test_load_of_a_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        SVDLoRA.load(path)


@pytest.mark.parametrize("length_delta", [-1, 1, None])
@pytest.mark.parametrize("method", ["delta", "factors", "split"])
def test_wrong_length_vector_names_the_expected_shape(basis, length_delta, method):
    x = np.zeros((basis.dim, 1)) if length_delta is None else np.zeros(basis.dim + length_delta)
    with pytest.raises(ValueError, match=rf"expected \({basis.dim},\)"):
        getattr(basis, method)(x)


@pytest.mark.parametrize("alpha_fraction", [0.0, 0.05])
def test_alpha_fraction_below_one_value_still_searches_one(alpha_fraction):
    svd = SVDLoRA.from_lora(random_lora(layer_modules(1), 6, 6, 8), 8, 8, alpha_fraction)
    assert svd.searched == 1 and svd.dim == 2 * 2  # two modules
