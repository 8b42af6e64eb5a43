"""The Task: named splits of examples, a prompt builder and a reward, plus the task registry.

A task module (one per task: `gsm8k`, ...) provides `load_splits(data_dir) -> {split: rows}`,
`messages(example, system_prompt) -> chat messages` and `score(completion, example) -> float`.
Splits are named `sft`, `train` (the ES prompts), `validation` and `test`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from essa.rewards.data import data_dir

TASKS = {"gsm8k": "essa.rewards.gsm8k"}
SPLITS = ("sft", "train", "validation", "test")


@dataclass
class Task:
    name: str
    splits: dict[str, list[dict]]
    build_messages: Callable[[dict], list[dict]]
    score: Callable[[str, dict], float]

    def examples(self, split: str) -> list[dict]:
        if split not in self.splits:
            raise ValueError(f"task {self.name} has no split {split!r}; it has {sorted(self.splits)}")
        return self.splits[split]


def load_task(name: str, data_dir_setting: str | None = None, system_prompt: str | None = None) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    module = importlib.import_module(TASKS[name])
    splits = module.load_splits(data_dir(data_dir_setting))
    prompt = system_prompt if system_prompt is not None else module.SYSTEM_PROMPT
    return Task(
        name=name,
        splits=splits,
        build_messages=lambda example: module.messages(example, prompt),
        score=module.score,
    )
