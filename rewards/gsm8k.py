"""GSM8K answer parsing and a binary correctness reward.

The reference answer is the number after the final ``####`` in a GSM8K
``answer`` field (e.g. ``"... \\n#### 1,000"`` -> ``"1000"``).

A model completion's final answer is taken from the first of these that
yields a number:

1. the last ``#### <number>`` -- the GSM8K format that the SFT data teaches,
   so a model trained on it states its answer this way;
2. the last ``\\boxed{...}`` (nested braces allowed; ``\\frac{a}{b}`` is
   evaluated; after an ``=`` inside the box the right-hand side is used) --
   what instruction-tuned models often produce;
3. the last "The answer is 42" / "The final answer is: $42." / "Answer: 42"
   (case-insensitive) -- the usual prose form;
4. the last number anywhere in the text -- the common fallback, as in
   lm-eval-harness "flexible-extract".

Numbers may carry ``$``, thousands commas (``1,234,567``), a sign (``-`` or the
Unicode minus ``−``), decimals (``42.50``, ``.5``); a trailing ``.``, ``%`` or
unit is ignored. ``"1, 2, 3"`` is three numbers, never 123. All numbers are
returned in the canonical form of :func:`normalize_number`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path

from essa.rewards.data import chat_messages, load_hub_split, read_jsonl, stable_order, take_splits

__all__ = ["extract_answer", "normalize_number", "reference_answer", "score"]

# A minus is a sign only when the character before it cannot end an operand
# ("16-3-4" is arithmetic, "= -5" and "is -5" are negative numbers).
# Thousands groups need exactly three digits and no space, so lists like
# "1, 2, 3" or "1,2,3" stay separate numbers. Digits glued to a word ("x2",
# "CO2") are not numbers.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])(?P<sign>[-\u2212]))?"
    r"(?:\\?\$)?"
    r"(?<!\w)"
    r"(?P<num>(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)"
)
_HASHES = re.compile(r"####")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FRAC = re.compile(r"^\s*(?P<sign>[-\u2212])?\s*\\[dt]?frac\s*\{(?P<n>[^{}]*)\}\s*\{(?P<d>[^{}]*)\}\s*$")
_ANSWER_IS = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:|=)", re.IGNORECASE)
# Bound on the decimal exponent so that a pathological "1E+999999999" cannot
# expand into a gigabyte-long string.
_MAX_EXPONENT = 1000


def normalize_number(text: str) -> str | None:
    """Return the canonical string form of a number, or None if ``text`` is not one.

    Strips whitespace, ``$`` (also ``\\$``) and commas, maps the Unicode minus to
    ``-``, parses with :class:`decimal.Decimal`, then prints in fixed-point
    notation without trailing zeros or a trailing ``.``: ``"$1,000.50"`` ->
    ``"1000.5"``, ``"1E+3"`` -> ``"1000"``, ``"-0"`` -> ``"0"``. Non-finite
    values (``inf``, ``nan``) give None.
    """
    cleaned = text.strip().replace("\\$", "").replace("$", "").replace(",", "")
    cleaned = cleaned.replace("\u2212", "-")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite() or abs(value.adjusted()) > _MAX_EXPONENT:
        return None
    if value == 0:
        return "0"  # also folds "-0" and "0.00"
    out = format(value, "f")
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return out


def _numbers(text: str) -> list[str]:
    """All numbers in ``text``, in order, normalized."""
    found = []
    for m in _NUMBER.finditer(text):
        value = normalize_number(("-" if m.group("sign") else "") + m.group("num"))
        if value is not None:
            found.append(value)
    return found


def _first_on_line(text: str) -> str | None:
    """The first number on the first non-blank line of ``text``."""
    line = text.lstrip().split("\n", 1)[0]
    nums = _numbers(line)
    return nums[0] if nums else None


def _boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}``, matching nested braces."""
    contents = []
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:  # an unclosed box (truncated output) is ignored
            contents.append(text[m.end() : i - 1])
    return contents


def _boxed_value(content: str) -> str | None:
    """The number a box states: a ``\\frac``, else the first number after the last ``=``."""
    frac = _FRAC.match(content)
    if frac:
        num, den = normalize_number(frac["n"]), normalize_number(frac["d"])
        if num is not None and den is not None and Decimal(den) != 0:
            value = Decimal(num) / Decimal(den)
            return normalize_number(str(-value if frac["sign"] else value))
    # "x = 5" means 5; taking the first number otherwise keeps units such as
    # "42 \text{cm}^2" from yielding 2.
    nums = _numbers(content.rsplit("=", 1)[-1])
    return nums[0] if nums else None


def extract_answer(completion: str) -> str | None:
    """Return the completion's final numeric answer, normalized, or None.

    Tries, in order, the last ``####``, the last ``\\boxed{}``, the last
    "answer is"/"Answer:" and finally the last number in the text; within a
    kind, the last occurrence that holds a number wins.
    """
    for m in reversed(list(_HASHES.finditer(completion))):
        if (value := _first_on_line(completion[m.end() :])) is not None:
            return value
    for content in reversed(_boxed_contents(completion)):
        if (value := _boxed_value(content)) is not None:
            return value
    for m in reversed(list(_ANSWER_IS.finditer(completion))):
        if (value := _first_on_line(completion[m.end() :])) is not None:
            return value
    nums = _numbers(completion)
    return nums[-1] if nums else None


def reference_answer(example: Mapping[str, object]) -> str:
    """Return the normalized number after the last ``####`` in ``example["answer"]``.

    Raises ValueError, quoting the end of the text, if there is no ``####`` or
    what follows it is not a single number.
    """
    answer = example.get("answer")
    if not isinstance(answer, str):
        raise ValueError(f"GSM8K example has no string 'answer' field: {example!r:.200}")
    _, sep, tail = answer.rpartition("####")
    value = normalize_number(tail) if sep else None
    if value is None:
        raise ValueError(f"GSM8K answer does not end in '#### <number>': ...{answer[-80:]!r}")
    return value


def score(completion: str, example: Mapping[str, object]) -> float:
    """1.0 if the completion's extracted answer equals the reference numerically, else 0.0.

    Raises ValueError (from :func:`reference_answer`) on a malformed example.
    """
    reference = reference_answer(example)
    predicted = extract_answer(completion)
    if predicted is None:
        return 0.0
    return 1.0 if Decimal(predicted) == Decimal(reference) else 0.0


# ---- the task: splits and prompts -----------------------------------------------------------

HUB_ID = "openai/gsm8k"
SYSTEM_PROMPT = "Solve the math problem step by step. End with the final answer on its own line as '#### <number>'."
# train.jsonl (7,473 rows) is split by a fixed hash order: validation 500, ES train 2,000, SFT the
# remaining 4,973. test.jsonl (1,319 rows) is the test split, never used while searching.
VALIDATION_SIZE = 500
TRAIN_SIZE = 2000


def load_splits(data_dir: Path | None) -> dict[str, list[dict]]:
    if data_dir is not None:
        train = read_jsonl(data_dir / "gsm8k" / "train.jsonl", required=("question", "answer"))
        test = read_jsonl(data_dir / "gsm8k" / "test.jsonl", required=("question", "answer"))
    else:
        train = load_hub_split(HUB_ID, "main", "train")
        test = load_hub_split(HUB_ID, "main", "test")
    ordered = stable_order(train, key="question")
    splits = take_splits(ordered, [("validation", VALIDATION_SIZE), ("train", TRAIN_SIZE), ("sft", None)])
    return {**splits, "test": test}


def messages(example: Mapping[str, object], system_prompt: str) -> list[dict]:
    return chat_messages(system_prompt, example["question"])


SFT_SPLIT = "sft"
_CALCULATOR = re.compile(r"<<[^<>]*>>")


def reference_response(example: Mapping[str, object]) -> str:
    """The reference solution as a model should write it: calculator annotations removed, ending
    in '#### <number>' (what SYSTEM_PROMPT asks for and :func:`extract_answer` reads first)."""
    reference_answer(example)  # a malformed answer fails here, with the example quoted
    return _CALCULATOR.sub("", str(example["answer"])).strip()
