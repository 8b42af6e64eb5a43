"""The `jsonl` task: the user's own prompts from a JSONL file, scored by the user's reward.

    essa align --data prompts.jsonl --prompt-field question --reward ./my_reward.py:score

Every row must hold the prompt field; the whole row is passed to the reward as `example`, so
reference answers or metadata can ride along. Rows are split by a fixed hash order of the
prompt: 10% validation and 10% test (each at least 1 and at most 500), the rest ES train.
"""

from __future__ import annotations

from pathlib import Path

from essa.rewards.data import DataError, chat_messages, read_jsonl, stable_order, take_splits

SYSTEM_PROMPT = ""


def load_splits(path: Path, prompt_field: str) -> dict[str, list[dict]]:
    if not prompt_field:
        raise DataError("--prompt-field is empty: name the field of each row that holds the prompt (default: prompt)")
    rows = read_jsonl(path, required=(prompt_field,))
    for number, row in enumerate(rows, start=1):
        prompt = row[prompt_field]
        if not isinstance(prompt, str) or not prompt.strip():
            what = "empty text" if isinstance(prompt, str) else f"{type(prompt).__name__} {str(prompt)[:40]!r}"
            raise DataError(
                f"{path}: row {number} (not counting blank lines): {prompt_field!r} holds {what}; "
                "each prompt must be non-empty text"
            )
    rows = stable_order(rows, key=prompt_field)
    if len(rows) < 3:
        raise DataError(f"{path} has {len(rows)} rows; a run needs at least 3 (train, validation, test)")
    held_out = min(500, max(1, len(rows) // 10))
    return take_splits(rows, [("validation", held_out), ("test", held_out), ("train", None)])


def messages(example: dict, system_prompt: str, prompt_field: str) -> list[dict]:
    return chat_messages(system_prompt, example[prompt_field])
