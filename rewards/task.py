"""The Task: named splits of examples, a prompt builder and a reward, plus the task registry.

A built-in task module (`gsm8k`, ...) provides `load_splits(data_dir) -> {split: rows}`,
`messages(example, system_prompt) -> chat messages`, `score(completion, example) -> float`,
`SYSTEM_PROMPT` and `HUB_ID`; a task with reference solutions also has `SFT_SPLIT` and
`reference_response(example) -> str` (used by `essa sft` and for few-shot turns). Splits are named
`sft`, `train` (the ES prompts), `validation` and `test`. The `jsonl` task reads the user's own file instead (`task.data_file`), and any task's
reward can be replaced by a plugin (`task.reward`, see plugins.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from essa.rewards.data import data_dir

TASKS = {
    "gsm8k": "essa.rewards.gsm8k",
    "ifeval": "essa.rewards.ifeval",
    "math500": "essa.rewards.math500",
    "countdown": "essa.rewards.countdown",
    "jsonl": "essa.rewards.jsonl",
}


@dataclass
class Task:
    name: str
    splits: dict[str, list[dict]]
    build_messages: Callable[[dict], list[dict]]
    score: Callable[[str, dict], float]
    reward_name: str
    eval_fields: Callable[[str, dict], dict[str, float]] | None = None  # per-example metric inputs
    aggregate: Callable[[dict], dict[str, float]] | None = None  # the task's standard metrics from them
    reference_response: Callable[[dict], str] | None = None  # None: no reference solutions (IFEval, jsonl)
    sft_split: str = "train"  # where SFT pairs come from (references, or prompts for rejection sampling)
    # The eval field that is the task's standard per-prompt metric, kept when a plugin replaces the
    # reward (a shaped training reward is still judged by the benchmark's metric); None: the reward.
    headline: str | None = None

    def headline_scores(self, rewards, details: dict):
        """Per-prompt values of the task's standard metric from a pool result's rewards and details."""
        return details[self.headline] if self.headline else rewards

    def examples(self, split: str) -> list[dict]:
        if split not in self.splits:
            raise ValueError(f"task {self.name} has no split {split!r}; it has {sorted(self.splits)}")
        return self.splits[split]


def load_task(cfg) -> Task:
    """The task described by `cfg` (essa.config.TaskConfig)."""
    from essa.rewards.plugins import is_trl_reward, load_reward, trl_batch_reward

    if cfg.name not in TASKS:
        raise ValueError(f"unknown task {cfg.name!r}; known tasks: {', '.join(sorted(TASKS))}")
    module = importlib.import_module(TASKS[cfg.name])
    prompt = cfg.system_prompt if cfg.system_prompt is not None else module.SYSTEM_PROMPT
    if cfg.name == "jsonl":
        if not cfg.data_file or not cfg.reward:
            raise ValueError("the jsonl task needs --data FILE.jsonl and --reward FILE.py:function")
        splits = module.load_splits(Path(cfg.data_file), cfg.prompt_field)
        build = lambda example: module.messages(example, prompt, cfg.prompt_field)  # noqa: E731
    else:
        splits = module.load_splits(data_dir(cfg.data_dir))
        build = lambda example: module.messages(example, prompt)  # noqa: E731
    reference = getattr(module, "reference_response", None)
    sft_split = getattr(module, "SFT_SPLIT", "train")
    if getattr(cfg, "few_shot", 0):
        build = with_few_shot(build, cfg.name, splits[sft_split], reference, cfg.few_shot)
    score = load_reward(cfg.reward) if cfg.reward else module.score
    if is_trl_reward(score):  # written for TRL's GRPOTrainer: called as it calls it
        score = trl_batch_reward(score, build)
    return Task(
        cfg.name,
        splits,
        build,
        score,
        cfg.reward or f"{cfg.name} (built-in)",
        getattr(module, "eval_fields", None),
        getattr(module, "aggregate", None),
        reference,
        sft_split,
        getattr(module, "HEADLINE", None),
    )


def with_few_shot(
    build: Callable[[dict], list[dict]],
    task: str,
    pool: list[dict],
    reference: Callable[[dict], str] | None,
    shots: int,
) -> Callable[[dict], list[dict]]:
    """`build` with `shots` solved examples (the first of `pool`) as earlier user/assistant turns.

    The examples come from the SFT split, never from the prompts being scored; they sit between
    the system prompt and the question.
    """
    if reference is None:
        raise ValueError(f"task.few_shot={shots}: task {task} has no reference solutions to show; use task.few_shot=0")
    if shots > len(pool):
        raise ValueError(f"task.few_shot={shots} but task {task} has only {len(pool)} solved examples")
    turns = []
    for example in pool[:shots]:
        turns += [build(example)[-1], {"role": "assistant", "content": reference(example)}]

    def build_with_shots(example: dict) -> list[dict]:
        chat = build(example)
        head = 1 if chat and chat[0]["role"] == "system" else 0
        return chat[:head] + turns + chat[head:]

    return build_with_shots
