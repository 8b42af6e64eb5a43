"""The SFT warm start with real parts: PEFT training of the embedded model on GSM8K references,
and rejection sampling from the real vLLM engine in a real Ray actor (IFEval has no references).
`essa align --init sft` end to end is covered by tests/test_e2e_align.py."""

from __future__ import annotations

import json

import pytest

from essa.config import load_config
from essa.model import sft
from essa.model.provision import resolve_model
from essa.rewards.task import load_task

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_sft_trains_a_peft_adapter_that_lowers_the_loss_and_caches_it(tmp_path):
    cfg = load_config(
        "gsm8k",
        overrides=[
            "sft.max_examples=8",
            "sft.batch_size=4",
            "sft.epochs=4",
            "sft.learning_rate=2e-3",
            "adapter.rank=4",
        ],
    )
    model_dir = resolve_model(cfg.model.name)
    adapter = sft.sft_adapter(cfg, model_dir, cache_root=tmp_path)

    info = json.loads((adapter / "essa.json").read_text())
    assert info["source"] == "reference" and info["pairs_used"] == 8 and info["steps"] == 8
    assert info["loss_last"] < 0.8 * info["loss_first"], info["losses"]  # 4 passes over 8 pairs: it memorizes
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(adapter))
    b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(b) == 4 * model.config.num_hidden_layers
    assert all(torch.count_nonzero(p) > 0 for p in b)  # PEFT starts B at zero: training moved every one

    # the second request is a cache hit: same folder, not retrained
    stamp = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    assert sft.sft_adapter(cfg, model_dir, cache_root=tmp_path) == adapter
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == stamp


@pytest.fixture
def local_ray():
    """rejection_sample starts Ray in this process (as `essa sft` does); later tests start their own."""
    import ray

    yield
    ray.shutdown()


def test_rejection_sampling_draws_distinct_responses_from_the_real_engine(local_ray):
    cfg = load_config(
        "ifeval",
        overrides=[
            "sft.max_examples=4",
            "sft.samples_per_prompt=2",
            "sft.min_reward=0.0",
            "generation.max_new_tokens=24",
            "engine.enforce_eager=true",
        ],
    )
    task = load_task(cfg.task)
    pairs = sft.rejection_sample(cfg, task)
    assert len(pairs) == 4
    prompts = [task.build_messages(task.examples("train")[i]) for i in range(4)]
    assert all(messages in prompts for messages, _ in pairs)
    assert all(text.strip() for _, text in pairs)
    # temperature 0.8 with no per-request seed: two draws for the same prompt differ
    by_prompt: dict = {}
    for messages, text in pairs:
        by_prompt.setdefault(json.dumps(messages), []).append(text)
    assert any(len(set(texts)) == 2 for texts in by_prompt.values()), by_prompt
