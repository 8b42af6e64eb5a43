"""Tests for essa.model.adapters: principal init and PEFT LoRA folders (written, read back, loaded by PEFT)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from essa.model.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, principal_init, read_peft_adapter, write_peft_adapter

MODULES = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj"]


def random_base(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {m: rng.normal(size=shape).astype(np.float32) for m, shape in shapes.items()}


def random_lora(rank=4, out_dim=12, in_dim=10, seed=0):
    rng = np.random.default_rng(seed)
    return {m: (rng.normal(size=(rank, in_dim)), rng.normal(size=(out_dim, rank))) for m in MODULES}


@pytest.mark.parametrize(
    ("shape", "rank", "scale"),
    [((16, 16), 4, 0.05), ((24, 12), 4, 1.0), ((10, 30), 8, 0.3), ((32, 32), 8, 2.0)],
)
def test_principal_init_is_scaled_best_rank_r_approximation(shape, rank, scale):
    base = random_base({"m.q_proj": shape})
    a, b = principal_init(base, rank, scale)["m.q_proj"]
    assert a.shape == (rank, shape[1]) and b.shape == (shape[0], rank)
    U, s, Vt = np.linalg.svd(base["m.q_proj"].astype(np.float64), full_matrices=False)
    best = (U[:, :rank] * s[:rank]) @ Vt[:rank]
    np.testing.assert_allclose(b @ a, scale * best, rtol=0, atol=1e-9 * np.abs(best).max() * max(scale, 1))
    sa, sb = np.linalg.svd(a, compute_uv=False), np.linalg.svd(b, compute_uv=False)
    np.testing.assert_allclose(sa, sb, rtol=1e-9)
    np.testing.assert_allclose(sa, np.sqrt(scale * s[:rank]), rtol=1e-9)


def test_principal_init_covers_every_module():
    base = random_base({m: (8, 8) for m in MODULES})
    lora = principal_init(base, 2, 0.1)
    assert sorted(lora) == sorted(MODULES)


def test_write_read_round_trip(tmp_path):
    lora = random_lora()
    out = write_peft_adapter(
        tmp_path / "adapter",
        lora,
        rank=4,
        lora_alpha=8.0,
        base_model="some/base",
        provenance={"run": "r1", "generation": 7},
    )
    assert out == tmp_path / "adapter"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no .adapter.tmp left behind
    assert sorted(p.name for p in out.iterdir()) == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS, "essa.json"])

    raw = load_file(str(out / ADAPTER_WEIGHTS))
    expected_keys = {f"base_model.model.{m}.lora_{f}.weight" for m in MODULES for f in "AB"}
    assert set(raw) == expected_keys
    assert all(v.dtype == np.float32 for v in raw.values())

    config = json.loads((out / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA"
    assert config["r"] == 4 and config["lora_alpha"] == 8.0
    assert config["target_modules"] == ["q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == "some/base"
    assert "run" not in config and "generation" not in config and "provenance" not in config
    assert json.loads((out / "essa.json").read_text()) == {"run": "r1", "generation": 7, "written_by": "essa"}

    back, back_config = read_peft_adapter(out)
    assert back_config == config
    assert sorted(back) == sorted(MODULES)
    for m, (a, b) in lora.items():
        a2, b2 = back[m]
        assert a2.shape == a.shape and b2.shape == b.shape
        np.testing.assert_array_equal(a2, a.astype(np.float32).astype(np.float64))
        np.testing.assert_array_equal(b2, b.astype(np.float32).astype(np.float64))


def test_essa_json_marks_the_folder_and_keeps_the_provenance(tmp_path):
    out = write_peft_adapter(tmp_path / "a", random_lora(), 4, 4, "base", provenance={"task": "t"})
    assert json.loads((out / "essa.json").read_text()) == {"task": "t", "written_by": "essa"}


def test_overwriting_an_existing_folder_replaces_it(tmp_path):
    target = tmp_path / "adapter"
    write_peft_adapter(target, random_lora(seed=1), 4, 4, "base", provenance={"v": 1})
    # A leftover temp dir from a crashed earlier write must not leak into the new folder.
    (tmp_path / ".adapter.tmp").mkdir()
    (tmp_path / ".adapter.tmp" / "junk.bin").write_bytes(b"x")
    second = random_lora(rank=2, seed=2)
    write_peft_adapter(target, second, 2, 2, "base2")
    # (temp names are unique per write, so a crashed write's folder is never reused or deleted by another)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".adapter.tmp", "adapter"]
    assert sorted(p.name for p in target.iterdir()) == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS, "essa.json"])
    back, config = read_peft_adapter(target)
    assert config["r"] == 2 and config["base_model_name_or_path"] == "base2"
    np.testing.assert_allclose(back[MODULES[0]][0], second[MODULES[0]][0], rtol=1e-6)


@pytest.fixture
def adapter_dir(tmp_path):
    return write_peft_adapter(tmp_path / "adapter", random_lora(), 4, 8, "base")


def test_missing_config_names_the_file(adapter_dir):
    (adapter_dir / ADAPTER_CONFIG).unlink()
    with pytest.raises(FileNotFoundError, match="adapter_config.json") as info:
        read_peft_adapter(adapter_dir)
    assert str(adapter_dir) in str(info.value)


def test_missing_weights_names_the_file(adapter_dir):
    (adapter_dir / ADAPTER_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        read_peft_adapter(adapter_dir)


def edit_config(adapter_dir, **changes):
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    config.update(changes)
    (adapter_dir / ADAPTER_CONFIG).write_text(json.dumps(config))


def edit_weights(adapter_dir, drop=(), add=None):
    tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    for key in drop:
        del tensors[key]
    tensors.update(add or {})
    save_file(tensors, str(adapter_dir / ADAPTER_WEIGHTS))


@pytest.mark.parametrize(
    ("breakage", "error", "message"),
    [
        (lambda d: edit_config(d, peft_type="IA3"), ValueError, r"'IA3' adapter; essa needs a LoRA"),
        (lambda d: edit_config(d, peft_type=None), ValueError, r"None adapter; essa needs a LoRA"),
        (lambda d: edit_config(d, use_dora=True), ValueError, r"DoRA"),
        (lambda d: edit_config(d, use_rslora=True), ValueError, r"rsLoRA"),
        (lambda d: (d / ADAPTER_CONFIG).write_text("{not json"), ValueError, r"adapter_config.json is corrupt"),
        (
            lambda d: edit_weights(d, drop=[f"base_model.model.{MODULES[1]}.lora_B.weight"]),
            ValueError,
            r"missing lora_A or lora_B: \['model.layers.0.self_attn.v_proj'\]",
        ),
        (
            lambda d: edit_weights(d, drop=[f"base_model.model.{MODULES[2]}.lora_A.weight"]),
            ValueError,
            r"missing lora_A or lora_B: \['model.layers.1.self_attn.q_proj'\]",
        ),
        (
            lambda d: edit_weights(d, add={"base_model.model.lm_head.weight": np.zeros((2, 2), np.float32)}),
            ValueError,
            r"unexpected tensor 'base_model.model.lm_head.weight'",
        ),
        (
            lambda d: edit_weights(
                d, add={"model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 10), np.float32)}
            ),
            ValueError,
            r"unexpected tensor 'model.layers.0.self_attn.q_proj.lora_A.weight'",
        ),
        (
            lambda d: (d / ADAPTER_WEIGHTS).write_bytes((d / ADAPTER_WEIGHTS).read_bytes()[:100]),
            ValueError,
            r"adapter_model.safetensors is corrupt",
        ),
        (lambda d: (d / ADAPTER_WEIGHTS).write_bytes(b"\x00" * 64), ValueError, r"is corrupt"),
    ],
    ids=[
        "ia3",
        "no-peft-type",
        "dora",
        "rslora",
        "corrupt-config",
        "missing-B",
        "missing-A",
        "extra-tensor",
        "unprefixed-key",
        "truncated-weights",
        "garbage-weights",
    ],
)
def test_read_errors_say_what_is_wrong(adapter_dir, breakage, error, message):
    breakage(adapter_dir)
    with pytest.raises(error, match=message) as info:
        read_peft_adapter(adapter_dir)
    assert str(adapter_dir) in str(info.value)


# ---- the real PEFT library loads what essa writes --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=64,
        max_position_embeddings=64,
    )
    return config


@pytest.mark.parametrize(("rank", "lora_alpha"), [(4, 4), (4, 16)])
def test_peft_loads_the_adapter_and_merges_to_w_plus_ba(tiny_llama, tmp_path, rank, lora_alpha):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama).eval()
    state = model.state_dict()
    base = {
        key[: -len(".weight")]: value.float().numpy().copy()
        for key, value in state.items()
        if key.endswith(("q_proj.weight", "v_proj.weight"))
    }
    assert sorted(base) == [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    lora = principal_init(base, rank, scale=0.5)
    folder = write_peft_adapter(tmp_path / "adapter", lora, rank, lora_alpha, "tiny-llama", provenance={"x": 1})

    peft_model = peft.PeftModel.from_pretrained(model, str(folder))
    merged = peft_model.merge_and_unload().state_dict()
    scaling = lora_alpha / rank
    for module, w in base.items():
        a, b = lora[module]
        a32, b32 = (np.asarray(f, np.float32).astype(np.float64) for f in (a, b))  # as stored
        expected = w.astype(np.float64) + scaling * (b32 @ a32)
        got = merged[f"{module}.weight"].double().numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        # Sanity: the adapter really changed the weight.
        assert np.abs(got - w).max() > 1e-3
    # Untargeted weights are untouched.
    k_before = state["model.layers.0.self_attn.k_proj.weight"].numpy()
    np.testing.assert_array_equal(merged["model.layers.0.self_attn.k_proj.weight"].numpy(), k_before)


def _model_folder(tmp_path, base: dict[str, np.ndarray]):
    save_file({f"{m}.weight": w.astype(np.float32) for m, w in base.items()}, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_update_strength_is_the_median_relative_norm_of_the_update(tmp_path):
    from essa.model.adapters import update_strength

    shapes = {f"model.layers.{i}.self_attn.q_proj": (12, 10) for i in range(5)}
    base = random_base(shapes, seed=3)
    lora = principal_init(base, 4, 0.05)  # B·A = 0.05 · best rank-4 part of W0
    expected = []
    for w in base.values():
        s = np.linalg.svd(w, compute_uv=False)
        expected.append(0.05 * np.sqrt((s[:4] ** 2).sum() / (s**2).sum()))
    strength = update_strength(lora, 1.0, _model_folder(tmp_path, base), sample=8)
    assert strength == pytest.approx(np.median(expected), rel=1e-5)
    assert update_strength(lora, 0.01, tmp_path) == pytest.approx(0.01 * strength, rel=1e-5)  # scaling counts


def test_a_weak_warm_start_is_reported_with_the_fixes(capsys):
    from essa.model.warm_start import WEAK_WARM_START, report_strength

    report_strength(3e-3, "sft")
    quiet = capsys.readouterr()
    assert "3.0e-03" in quiet.out and "warning" not in quiet.err
    report_strength(WEAK_WARM_START / 4, "sft")
    err = capsys.readouterr().err
    assert "warning" in err and "sft.max_examples" in err and "--init principal" in err
