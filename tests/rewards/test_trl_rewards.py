"""TRL-style reward functions (GRPOTrainer's keyword convention) used unchanged as essa rewards."""

from __future__ import annotations

from pathlib import Path

import pytest

from essa.config import TaskConfig
from essa.rewards.plugins import SafeReward, is_trl_reward, trl_batch_reward
from essa.rewards.task import load_task

EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "examples" / "rewards" / "trl_style.py"


def essa_single(completion, example):  # essa's own form
    return 1.0


def test_the_trl_convention_is_told_apart_from_essa_forms() -> None:
    assert is_trl_reward(lambda completions, **kwargs: [])
    assert is_trl_reward(lambda prompts, completions, answer, **kwargs: [])
    assert not is_trl_reward(essa_single)
    assert not is_trl_reward(lambda completions, examples: [])  # essa's batch form takes no **kwargs
    assert not is_trl_reward(len)


def test_a_trl_reward_gets_prompts_completions_and_every_column_as_keyword_lists() -> None:
    seen = {}

    def reward(completions, **kwargs):
        seen.update(kwargs, completions=completions)
        return [float(len(c[0]["content"])) for c in completions]

    build = lambda example: [{"role": "user", "content": f"reach {example['target']}"}]  # noqa: E731
    wrapped = trl_batch_reward(reward, build)
    examples = [{"nums": [1, 2], "target": 3}, {"nums": [4, 5], "target": 9, "extra": "x"}]
    assert SafeReward(wrapped, "t").many(["ab", "abcd"], examples, ["a", "b"]) == [2.0, 4.0]
    assert seen["completions"] == [[{"role": "assistant", "content": "ab"}], [{"role": "assistant", "content": "abcd"}]]
    assert seen["prompts"] == [[{"role": "user", "content": "reach 3"}], [{"role": "user", "content": "reach 9"}]]
    assert seen["nums"] == [[1, 2], [4, 5]] and seen["target"] == [3, 9] and seen["extra"] == [None, "x"]


def test_a_trl_reward_file_runs_unchanged_through_a_task() -> None:
    task = load_task(TaskConfig(name="countdown", reward=f"{EXAMPLE_FILE}:uses_given_numbers"))
    example = task.examples("train")[0]
    nums = [int(n) for n in example["nums"]]
    right = f"<answer> {' + '.join(str(n) for n in nums)} </answer>"
    half = f"<answer> {nums[0]} </answer>"
    rewards = SafeReward(task.score, task.reward_name).many([right, half, "none"], [example] * 3, ["x"] * 3)
    assert rewards == pytest.approx([1.0, 1 / len(nums), 0.0])
    assert task.headline == "correct"  # Countdown's benchmark figure stays the held-out headline


def test_a_trl_reward_that_returns_the_wrong_count_names_the_reward() -> None:
    wrapped = trl_batch_reward(lambda completions, **kwargs: [1.0], lambda e: [])
    with pytest.raises(Exception, match="returned 1 values for 2 completions"):
        SafeReward(wrapped, "mine").many(["a", "b"], [{}, {}], ["p0", "p1"])
