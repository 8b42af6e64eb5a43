"""The SFT warm start without training a model: pairs, tokenization, batching, cache keys, and
rejection sampling against a named fake pool (the real engine and training run in
tests/test_e2e_sft.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from essa.config import load_config
from essa.model import sft
from essa.model.provision import resolve_model
from essa.rewards import gsm8k, math500
from essa.rewards.task import load_task


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m-instruct")))


@pytest.fixture(scope="module")
def gsm8k_task():
    return load_task(load_config("gsm8k").task)


def test_gsm8k_reference_responses_earn_full_reward_and_drop_calculator_notes(gsm8k_task):
    examples = gsm8k_task.examples("sft")
    assert len(examples) == 4973
    for example in examples:
        response = gsm8k.reference_response(example)
        assert "<<" not in response and ">>" not in response
        assert response.rsplit("\n", 1)[-1].startswith("#### ")
        assert gsm8k.score(response, example) == 1.0


def test_math500_reference_solutions_earn_full_reward():
    task = load_task(load_config("math500").task)
    assert task.sft_split == "train"
    assert all(math500.score(task.reference_response(e), e) == 1.0 for e in task.examples("train"))


def test_reference_pairs_take_the_first_examples_of_the_sft_split(gsm8k_task):
    cfg = load_config("gsm8k", overrides=["sft.max_examples=5"])
    pairs, source = sft.sft_pairs(cfg, gsm8k_task)
    assert source == "reference" and len(pairs) == 5
    first = gsm8k_task.examples("sft")[0]
    assert pairs[0] == (gsm8k_task.build_messages(first), gsm8k.reference_response(first))


def test_tokenized_pair_is_the_engine_prompt_then_the_response(tokenizer, gsm8k_task):
    messages = gsm8k_task.build_messages(gsm8k_task.examples("sft")[0])
    ((ids, prompt_len),) = sft.tokenize_pairs(tokenizer, [(messages, "6 + 7 = 13\n#### 13")], 768)[0]
    engine_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(ids[:prompt_len]) == engine_prompt
    response = tokenizer.decode(ids[prompt_len:])
    assert response.startswith("6 + 7 = 13\n#### 13") and tokenizer.eos_token in response


def test_pairs_longer_than_max_length_are_skipped_and_counted(tokenizer):
    pairs = [([{"role": "user", "content": "hi"}], "short"), ([{"role": "user", "content": "hi"}], "word " * 400)]
    encoded, skipped = sft.tokenize_pairs(tokenizer, pairs, 128)
    assert len(encoded) == 1 and skipped == 1


def test_collate_masks_prompt_and_padding():
    input_ids, labels, mask = sft.collate([([1, 2, 3, 4], 2), ([5, 6], 1)], pad=0)
    assert input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert labels.tolist() == [[-100, -100, 3, 4], [-100, 6, -100, -100]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_batches_cover_each_pair_once_per_epoch_and_depend_only_on_the_seed():
    encoded = [([0] * n, 1) for n in np.random.default_rng(0).integers(2, 300, size=203)]
    steps = sft.batches(encoded, batch_size=8, epochs=2, seed=3)
    flat = [i for step in steps for i in step]
    assert sorted(flat) == sorted(list(range(203)) * 2)
    assert max(len(s) for s in steps) == 8 and len(steps) == 2 * 26  # 203 = 25·8 + 3: one short batch per epoch
    assert steps == sft.batches(encoded, batch_size=8, epochs=2, seed=3)
    assert steps != sft.batches(encoded, batch_size=8, epochs=2, seed=4)

    # grouped by length: far less padding than a random order
    def padding(ss):
        return sum(max(len(encoded[i][0]) for i in s) * len(s) - sum(len(encoded[i][0]) for i in s) for s in ss)

    shuffled = [list(range(k, min(k + 8, 203))) for k in range(0, 203, 8)] * 2
    assert padding(steps) < 0.5 * padding(shuffled)


def test_keep_rewarded_applies_the_threshold_and_drops_repeats():
    kept = sft.keep_rewarded([0, 0, 0, 1, 1], ["a", "a", "b", "c", " "], [1.0, 1.0, 0.5, 1.0, 1.0], 1.0)
    assert kept == [(0, "a"), (1, "c")]


@pytest.mark.parametrize(
    "override",
    [
        "adapter.rank=4",
        "sft.learning_rate=1e-4",
        "sft.max_examples=10",
        "task.system_prompt=Be brief.",
        "adapter.target_modules=[q_proj]",
    ],
)
def test_cache_key_changes_with_what_shapes_the_adapter(gsm8k_task, override):
    model_dir = resolve_model("smollm2-135m-instruct")
    key = sft.cache_key(load_config("gsm8k"), gsm8k_task, model_dir)
    assert key == sft.cache_key(load_config("gsm8k"), gsm8k_task, model_dir)
    assert key != sft.cache_key(load_config("gsm8k", overrides=[override]), gsm8k_task, model_dir)


def test_cache_key_changes_with_the_data(gsm8k_task):
    model_dir = resolve_model("smollm2-135m-instruct")
    cfg = load_config("gsm8k")
    key = sft.cache_key(cfg, gsm8k_task, model_dir)
    gsm8k_task.splits["sft"] = gsm8k_task.splits["sft"][:-1]
    try:
        assert sft.cache_key(cfg, gsm8k_task, model_dir) != key
    finally:
        gsm8k_task.splits.clear()
        gsm8k_task.splits.update(load_task(cfg.task).splits)


def test_lora_from_state_maps_peft_keys_to_modules():
    import torch

    state = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(2, 5),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(7, 2),
    }
    lora = sft.lora_from_state(state)
    assert list(lora) == ["model.layers.0.self_attn.q_proj"]
    a, b = lora["model.layers.0.self_attn.q_proj"]
    assert a.shape == (2, 5) and b.shape == (7, 2) and a.dtype == np.float32


class FakeSamplingPool:
    """Named fake of the rollout pool for rejection-sampling bookkeeping: returns canned texts
    whose reward is 1 when the text says 'good'."""

    def __init__(self, calls: list):
        self.calls = calls

    def evaluate(self, vectors, split, indices, texts=False):
        from essa.workers.pool import PoolResult

        self.calls.append((vectors, split, list(indices), texts))
        out = [f"good {i}" if i % 2 == 0 and k % 2 == 0 else f"bad {i}" for k, i in enumerate(indices)]
        rewards = np.array([[1.0 if t.startswith("good") else 0.0 for t in out]])
        return PoolResult(rewards, np.zeros(1, dtype=np.int64), texts=[out])

    def shutdown(self):
        self.calls.append("shutdown")


def test_rejection_sampling_keeps_full_reward_draws_and_stops_when_it_has_enough(monkeypatch):
    calls: list = []
    monkeypatch.setattr("essa.run.rollout_pool.pool_from_config", lambda cfg, basis, **kw: FakeSamplingPool(calls))
    cfg = load_config("ifeval", overrides=["sft.max_examples=3", "sft.samples_per_prompt=2"])
    task = load_task(cfg.task)
    pairs, source = sft.sft_pairs(cfg, task)
    assert source == "rejection-sampled"
    assert [text for _, text in pairs] == ["good 0", "good 2", "good 4"]
    assert pairs[1][0] == task.build_messages(task.examples("train")[2])
    vectors, split, indices, texts = calls[0]
    assert vectors is None and split == "train" and texts and indices == [0, 0, 1, 1, 2, 2]
    assert len(calls) == 3 and calls[-1] == "shutdown"  # two chunks of 3 prompts were enough


def test_rejection_sampling_that_keeps_nothing_names_the_fixes(monkeypatch):
    class NothingPasses(FakeSamplingPool):
        def evaluate(self, vectors, split, indices, texts=False):
            result = super().evaluate(vectors, split, indices, texts)
            result.rewards[:] = 0.0
            return result

    calls: list = []
    monkeypatch.setattr("essa.run.rollout_pool.pool_from_config", lambda cfg, basis, **kw: NothingPasses(calls))
    cfg = load_config("ifeval", overrides=["sft.max_examples=50"])
    task = load_task(cfg.task)
    task.splits["train"] = task.splits["train"][:10]
    with pytest.raises(sft.SFTError, match=r"kept none of 40 responses.*sft.min_reward.*adapter.init=principal"):
        sft.rejection_sample(cfg, task)
    assert calls[-1] == "shutdown"


def test_few_shot_turns_sit_between_system_prompt_and_question():
    task = load_task(load_config("gsm8k", overrides=["task.few_shot=2"]).task)
    shots = task.examples("sft")[:2]
    chat = task.build_messages(task.examples("train")[0])
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert chat[1]["content"] == shots[0]["question"] and chat[2]["content"] == gsm8k.reference_response(shots[0])
    assert chat[-1]["content"] == task.examples("train")[0]["question"]


def test_few_shot_needs_reference_solutions():
    with pytest.raises(ValueError, match="ifeval has no reference solutions"):
        load_task(load_config("ifeval", overrides=["task.few_shot=1"]).task)


def test_sft_adapter_uses_the_cache_without_training(tmp_path, monkeypatch, gsm8k_task):
    from essa.model.adapters import principal_init, read_base_weights, write_peft_adapter

    cfg = load_config("gsm8k", overrides=["adapter.rank=2"])
    model_dir = resolve_model(cfg.model.name)
    key = sft.cache_key(cfg, gsm8k_task, model_dir)
    cached = tmp_path / f"gsm8k-smollm2-135m-instruct-r2-{key[:12]}"
    lora = principal_init(read_base_weights(model_dir, ["q_proj"]), 2, 0.05)
    write_peft_adapter(cached, lora, 2, 4.0, "m")
    monkeypatch.setattr(sft, "train_lora", lambda *a: pytest.fail("a cached adapter must not be retrained"))
    assert sft.sft_adapter(cfg, model_dir, cache_root=tmp_path) == cached
    assert not list(Path(tmp_path).glob(".*.tmp"))
