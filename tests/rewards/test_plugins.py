"""Reward plugins: loading by file, module and entry point; failures named; the jsonl task."""

from __future__ import annotations

import json
import math
import sys

import pytest

from essa.config import TaskConfig
from essa.rewards.plugins import RewardError, SafeReward, load_reward, resolve_reward_spec
from essa.rewards.task import load_task

PLUGIN = """
def length_score(completion, example):
    return len(completion) / 10

def raises(completion, example):
    raise KeyError("answer")

def returns_nan(completion, example):
    return float("nan")

def returns_text(completion, example):
    return "1.0"

def returns_bool(completion, example):
    return completion == example["target"]
"""


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text(PLUGIN)
    return path


def test_file_plugin_loads_and_scores(plugin):
    fn = load_reward(f"{plugin}:length_score")
    assert fn("abcde", {}) == 0.5


def test_module_plugin_loads(plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin.parent))
    sys.modules.pop("my_reward", None)
    assert load_reward("my_reward:length_score")("ab", {}) == 0.2


def test_relative_file_spec_becomes_absolute(plugin, monkeypatch):
    monkeypatch.chdir(plugin.parent)
    assert resolve_reward_spec("./my_reward.py:length_score") == f"{plugin}:length_score"
    assert resolve_reward_spec("pkg.mod:fn") == "pkg.mod:fn"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{plugin}:nope", "has no function 'nope'"),
        ("{dir}/missing.py:f", "file not found"),
        ("{plugin}:", "names no function"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("not_an_entry_point", "no entry point 'not_an_entry_point' in group 'essa.rewards'"),
    ],
)
def test_load_errors_name_the_problem(plugin, spec, message):
    with pytest.raises(RewardError, match=message):
        load_reward(spec.format(plugin=plugin, dir=plugin.parent))


def test_plugin_that_fails_to_import_is_named(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_anywhere\n")
    with pytest.raises(RewardError, match="importing .*bad.py failed .*ModuleNotFoundError"):
        load_reward(f"{bad}:f")


@pytest.mark.parametrize(
    "function, detail", [("raises", "KeyError"), ("returns_nan", "nan"), ("returns_text", "'1.0'")]
)
def test_failing_reward_raises_naming_plugin_and_example(plugin, function, detail):
    reward = SafeReward(load_reward(f"{plugin}:{function}"), f"my_reward.py:{function}")
    with pytest.raises(RewardError) as info:
        reward("some completion", {}, "train example 17")
    message = str(info.value)
    assert f"my_reward.py:{function}" in message and "train example 17" in message and detail in message
    assert "task.reward_errors=zero" in message


def test_zero_mode_scores_failures_zero_and_counts_them(plugin):
    reward = SafeReward(load_reward(f"{plugin}:raises"), "raises", on_error="zero")
    assert [reward("x", {}, f"example {i}") for i in range(3)] == [0.0, 0.0, 0.0]
    assert reward.errors == 3


def test_bool_results_count_as_one_and_zero(plugin):
    reward = SafeReward(load_reward(f"{plugin}:returns_bool"), "returns_bool")
    assert reward("yes", {"target": "yes"}, "e") == 1.0 and reward("no", {"target": "yes"}, "e") == 0.0


def test_unknown_error_mode_is_refused(plugin):
    with pytest.raises(ValueError, match="raise or zero"):
        SafeReward(math.sqrt, "sqrt", on_error="ignore")


def test_jsonl_task_with_a_plugin(tmp_path, plugin):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "target": str(i)}) + "\n" for i in range(30)))
    task = load_task(
        TaskConfig(
            name="jsonl",
            data_file=str(data),
            prompt_field="question",
            reward=f"{plugin}:returns_bool",
            system_prompt="Be brief.",
        )
    )
    sizes = {k: len(v) for k, v in task.splits.items()}
    assert sizes == {"validation": 3, "test": 3, "train": 24}
    example = task.examples("train")[0]
    assert task.build_messages(example) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": example["question"]},
    ]
    assert task.score(example["target"], example) is True


def test_jsonl_task_reports_rows_missing_the_prompt_field(tmp_path, plugin):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"question": "a"}\n{"text": "b"}\n{"question": "c"}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:2: missing key\(s\) \['question'\]"):
        load_task(
            TaskConfig(name="jsonl", data_file=str(data), prompt_field="question", reward=f"{plugin}:length_score")
        )


def test_gsm8k_with_a_plugin_reward_keeps_its_data(plugin):
    task = load_task(TaskConfig(name="gsm8k", reward=f"{plugin}:length_score"))
    assert len(task.examples("train")) == 2000 and task.score("abc", {}) == pytest.approx(0.3)


BATCH_PLUGIN = """
from essa.rewards.plugins import batch_reward

CALLS = []

@batch_reward
def lengths(completions, examples):
    CALLS.append(len(completions))
    return [len(c) + len(e["q"]) for c, e in zip(completions, examples)]

@batch_reward
def too_few(completions, examples):
    return [1.0]

@batch_reward
def one_nan(completions, examples):
    return [1.0] * (len(completions) - 1) + [float("nan")]
"""


@pytest.fixture
def batch_plugin(tmp_path):
    path = tmp_path / "batch_reward.py"
    path.write_text(BATCH_PLUGIN)
    return path


def test_batch_form_reward_is_called_once_for_all_completions(batch_plugin):
    fn = load_reward(f"{batch_plugin}:lengths")
    reward = SafeReward(fn, "lengths")
    assert reward.batch
    values = reward.many(["a", "bbb", ""], [{"q": "x"}, {"q": ""}, {"q": "yy"}], ["e0", "e1", "e2"])
    assert values == [2.0, 3.0, 2.0]
    assert fn.__globals__["CALLS"] == [3]
    assert reward("abcd", {"q": "z"}, "e9") == 5.0  # the single form goes through a batch of one


@pytest.mark.parametrize(
    "function, detail", [("too_few", "returned 1 values for 3 completions"), ("one_nan", "nan at position 2")]
)
def test_batch_reward_errors_name_the_problem_and_zero_mode_counts_the_batch(batch_plugin, function, detail):
    fn = load_reward(f"{batch_plugin}:{function}")
    args = (["a", "b", "c"], [{}, {}, {}], ["train example 4", "train example 5", "train example 6"])
    with pytest.raises(RewardError, match=rf"{function}.*train example 4 \.\. train example 6.*{detail}"):
        SafeReward(fn, function).many(*args)
    zero = SafeReward(fn, function, "zero")
    assert zero.many(*args) == [0.0, 0.0, 0.0] and zero.errors == 3


def test_single_form_reward_is_called_per_completion(plugin):
    reward = SafeReward(load_reward(f"{plugin}:raises"), "raises", "zero")
    assert not reward.batch
    assert reward.many(["a", "b"], [{}, {}], ["e0", "e1"]) == [0.0, 0.0] and reward.errors == 2
