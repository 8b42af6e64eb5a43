"""IFEval: verifiable instruction following (Zhou et al., 2023), as a task and a reward.

Each example is a prompt with one or more instructions ("answer in fewer than 100 words",
"do not use commas", ...), given as official instruction ids with their arguments. The
checkers (:mod:`essa.rewards.ifeval_checkers`) reimplement the official ones; arguments come
from the data and are never randomized.

Two ways to judge a response, exactly as the official ``evaluation_main.py``:

- strict: the response as it is;
- loose: an instruction is followed if any of 8 variants passes: the response, the response
  without its first line, without its last line, without both, and each of these four with
  every ``*`` removed (forgives a "Sure, here it is:" preamble and markdown emphasis).

An empty (all-whitespace) response follows nothing. The training reward, :func:`score`, is
the strict fraction of an example's instructions followed: denser than all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from essa.rewards.data import DataError, chat_messages, load_hub_split, read_jsonl, stable_order, take_splits
from essa.rewards.ifeval_checkers import Checker, build_checker

__all__ = [
    "follow_instructions",
    "load_splits",
    "loose_variants",
    "messages",
    "metrics",
    "score",
    "score_all_strict",
    "score_loose",
]


def _checkers(example: Mapping[str, object]) -> list[Checker]:
    """The bound checks of an example's instructions, in order."""
    ids, kwargs = example.get("instruction_id_list"), example.get("kwargs")
    key = example.get("key", "?")
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
        raise ValueError(
            f"IFEval example {key}: 'instruction_id_list' and 'kwargs' must be lists of equal length, "
            f"got {ids!r:.200} and {kwargs!r:.200}"
        )
    if not ids:
        raise ValueError(f"IFEval example {key} has no instructions")
    return [build_checker(i, k) for i, k in zip(ids, kwargs)]


def _follows(check: Checker, text: str) -> bool:
    return bool(text.strip()) and check(text)


def loose_variants(response: str) -> list[str]:
    """The 8 texts loose scoring tries, in the official order (the response itself first)."""
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    trimmed = [response, remove_first, remove_last, remove_both]
    return [response, response.replace("*", "")] + trimmed[1:] + [t.replace("*", "") for t in trimmed[1:]]


def _strict(response: str, checkers: list[Checker]) -> list[bool]:
    return [_follows(check, response) for check in checkers]


def follow_instructions(response: str, example: Mapping[str, object]) -> dict[str, list[bool]]:
    """Per instruction of ``example``, whether ``response`` follows it.

    Returns ``{"strict": [...], "loose": [...]}``, one boolean per instruction, in the order of
    ``example["instruction_id_list"]``. Raises ValueError on a malformed example or an
    unknown instruction id.
    """
    checkers = _checkers(example)
    strict = _strict(response, checkers)
    variants = loose_variants(response)[1:]  # the first variant is the response: strict covers it
    loose = [ok or any(_follows(check, v) for v in variants) for ok, check in zip(strict, checkers)]
    return {"strict": strict, "loose": loose}


def score(completion: str, example: Mapping[str, object]) -> float:
    """Fraction of the example's instructions the completion follows, strictly (the reward)."""
    followed = _strict(completion, _checkers(example))
    return sum(followed) / len(followed)


def score_loose(completion: str, example: Mapping[str, object]) -> float:
    """Fraction of the example's instructions the completion follows, loosely."""
    followed = follow_instructions(completion, example)["loose"]
    return sum(followed) / len(followed)


def score_all_strict(completion: str, example: Mapping[str, object]) -> float:
    """1.0 if the completion strictly follows every instruction (IFEval's prompt level), else 0.0."""
    return 1.0 if all(_strict(completion, _checkers(example))) else 0.0


# The per-prompt field behind the headline figure of a before/after comparison (essa.report.heldout).
HEADLINE = "prompt_strict"


def eval_fields(response: str, example: Mapping[str, object]) -> dict[str, float]:
    """Per-example counts behind the four standard numbers (computed on the worker by `essa eval`)."""
    result = follow_instructions(response, example)
    return {
        "prompt_strict": float(all(result["strict"])),
        "prompt_loose": float(all(result["loose"])),
        "followed_strict": float(sum(result["strict"])),
        "followed_loose": float(sum(result["loose"])),
        "instructions": float(len(result["strict"])),
    }


def aggregate(fields: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """IFEval's four standard accuracies from per-example `eval_fields`.

    ``prompt_level_*``: fraction of prompts whose instructions are all followed;
    ``inst_level_*``: fraction of all instructions followed, pooled over prompts.
    """
    n, instructions = len(fields["prompt_strict"]), sum(fields["instructions"])
    if not n:
        raise ValueError("metrics need at least one example")
    return {
        "prompt_level_strict_acc": sum(fields["prompt_strict"]) / n,
        "inst_level_strict_acc": sum(fields["followed_strict"]) / instructions,
        "prompt_level_loose_acc": sum(fields["prompt_loose"]) / n,
        "inst_level_loose_acc": sum(fields["followed_loose"]) / instructions,
    }


def metrics(responses: Sequence[str], examples: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """IFEval's four standard accuracies over paired responses and examples."""
    if len(responses) != len(examples):
        raise ValueError(f"metrics needs one response per example, got {len(responses)} and {len(examples)}")
    if not examples:
        raise ValueError("metrics needs at least one example")
    per_example = [eval_fields(r, e) for r, e in zip(responses, examples)]
    return aggregate({key: [f[key] for f in per_example] for key in per_example[0]})


# ---- the task: splits and prompts -----------------------------------------------------------

HUB_ID = "google/IFEval"
# IFEval prompts carry their own instructions; a system prompt would only add noise (and the
# official evaluation uses none). The user may still set one.
SYSTEM_PROMPT = ""
# IFEval has only its 541 prompts (one hub split, "train"). They are split by a fixed hash
# order of "key": validation 100, test 200, ES train the remaining 241. There is no SFT split:
# IFEval has no reference responses.
VALIDATION_SIZE = 100
TEST_SIZE = 200


def load_splits(data_dir: Path | None) -> dict[str, list[dict]]:
    path: Path | str
    if data_dir is not None:
        path = data_dir / "ifeval" / "input_data.jsonl"
        rows = read_jsonl(path, required=("key", "prompt", "instruction_id_list", "kwargs"))
    else:
        path, rows = HUB_ID, load_hub_split(HUB_ID, None, "train")
    seen: set[str] = set()
    for row in rows:
        key = str(row.get("key"))
        if key in seen:
            raise DataError(f"{path}: key {key} occurs twice; IFEval keys must be unique")
        seen.add(key)
        try:
            _checkers(row)  # fail at load, not in the middle of a search
        except ValueError as exc:
            raise DataError(f"{path}: example with key {key}: {exc}") from exc
    if len(rows) <= VALIDATION_SIZE + TEST_SIZE:
        raise DataError(f"{path} holds {len(rows)} prompts; IFEval splits need more than {VALIDATION_SIZE + TEST_SIZE}")
    ordered = stable_order(rows, key="key")
    return take_splits(ordered, [("validation", VALIDATION_SIZE), ("test", TEST_SIZE), ("train", None)])


def messages(example: Mapping[str, object], system_prompt: str) -> list[dict]:
    return chat_messages(system_prompt, example["prompt"])
