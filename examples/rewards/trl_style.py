"""Reward functions in TRL's GRPOTrainer convention, which essa uses unchanged (docs/reward-plugins.md).

    essa align --task countdown --reward examples/rewards/trl_style.py:uses_given_numbers

A TRL reward takes keyword arguments and returns one float per completion. essa calls it as
GRPOTrainer does on a conversational dataset: ``prompts`` (chat messages), ``completions`` (each a
one-message list) and every field of the data rows as a list (Countdown: ``nums``, ``target``).
"""

import re


def format_reward(completions, **kwargs):
    """1.0 when the completion puts something in <answer> ... </answer>, else 0.0."""
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if re.search(r"<answer>.+?</answer>", c, re.DOTALL) else 0.0 for c in contents]


def uses_given_numbers(completions, nums, **kwargs):
    """Share of the given numbers that the last <answer> uses (each once), 0.0 without an answer."""
    rewards = []
    for completion, numbers in zip(completions, nums):
        found = re.findall(r"<answer>(.*?)</answer>", completion[0]["content"], re.DOTALL)
        left = [int(n) for n in re.findall(r"\d+", found[-1])] if found else []
        hits = 0
        for n in numbers:
            if n in left:
                left.remove(n)
                hits += 1
        rewards.append(hits / len(numbers) if found else 0.0)
    return rewards
