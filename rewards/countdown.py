"""Countdown: combine 3-4 given numbers with + - * / into an equation that equals a target.

The benchmark that the published ES-for-LLM systems report (Evolution Strategies at Scale,
arXiv 2509.24372; EGGROLL, arXiv 2511.16652), with rows shaped like TinyZero's
Countdown-Tasks-3to4: ``{"nums": [19, 36, 55, 7], "target": 65}``, plus ``"solution"``, one
expression that reaches the target.

**Problems** are generated offline; no files or hub are involved and ``task.data_dir`` is ignored.
One stream, ``random.Random(SEED)``, is consumed only through ``random()`` (the one method whose
sequence Python guarantees across versions). Each problem picks n in {3, 4} uniformly, then draws
n numbers uniformly from 1..99 with replacement and a random expression tree: two of the remaining
operands and one of + - * / are picked at random and replaced by their combination, until one is
left. Arithmetic is exact (rationals, no rounding), so intermediate values may be negative or
fractional. A draw is rejected, and redrawn with the same n, when it divides by zero, when the
result is not an integer in 1..999, or when its (sorted numbers, target) was already drawn; the
final expression is the problem's reference ``solution``. The unique problems of the stream are
cut into fixed index ranges: test [0, 500), validation [500, 1000), train [1000, 3000) (the ES
prompts), sft [3000, 5000) (the reference solutions used for the SFT warm start). Held-out parts
come first, so resizing train or sft never changes them. Generating all 5,000 takes under half a
second on one core and is cached in memory.

**Reward** (:func:`score`): the content of the last ``<answer>...</answer>`` of the completion is
an equation. An optional ``= <integer>`` suffix is stripped; it must state the target. The rest,
at most 100 characters of digits, ``+ - * / ( )`` and spaces, is parsed with :mod:`ast`
(``mode="eval"``, never evaluated by Python): only binary + - * /, unary minus (TinyZero's
checker accepts it, and it cannot reach a target the binary operators cannot) and decimal integer
literals are allowed, nested at most 12 deep, and the value is computed with ``Fraction``.
The multiset of literals must equal the given numbers. 1.0 when all that holds and the value is
the target; ``FORMAT_SCORE`` (0.1, TinyZero's format score) when the tag holds such an expression
that is wrong (wrong value, wrong numbers, a false ``= n`` suffix, a division by zero); 0.0 when
there is no tag or its content is not such an expression (``**``, ``//``, names, calls, floats,
too long, too deep). ``essa eval`` also reports ``exact_acc`` (the fraction solved: reward 1.0,
the task's standard metric) and ``format_acc`` (the fraction with a well-formed answer); its
``accuracy`` is the mean reward, format credit included.

**A denser training reward** (:func:`partial_credit`, ``--reward essa.rewards.countdown:partial_credit``)
adds credit for a wrong equation that uses the given numbers and comes near the target; a solution
still scores 1.0 and nothing else reaches 0.7. Held-out figures stay the exact metric above.
"""

from __future__ import annotations

import ast
import functools
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from essa.rewards.data import chat_messages

__all__ = [
    "FORMAT_SCORE",
    "check",
    "evaluate_equation",
    "extract_equation",
    "generate",
    "load_splits",
    "partial_credit",
    "score",
]

FORMAT_SCORE = 0.1
MAX_CHARS = 100  # longer answers are not read (a 4-number solution needs about 25)
MAX_DEPTH = 12  # nesting of operators; 4 numbers need 3
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ALLOWED = re.compile(r"[0-9+\-*/()\s]+")
_SUFFIX = re.compile(r"=\s*([0-9]+)\s*$")
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


# ---- safe evaluation --------------------------------------------------------------------------


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    return a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b


def _shown(value: Fraction) -> str:
    """An operand in a worked step: ``7``, ``(-4)``, ``(7/2)``."""
    return str(value) if value.denominator == 1 and value >= 0 else f"({value})"


class _Invalid(Exception):
    """Not an arithmetic expression of the allowed form."""


def _walk(node: ast.AST, depth: int, literals: list[int], steps: list[str] | None) -> Fraction | None:
    """The exact value of ``node`` (None after a division by zero); its literals appended in order.

    ``steps`` collects "a op b = c" for each binary operation, innermost first (the SFT worked line).
    """
    if depth > MAX_DEPTH:
        raise _Invalid("too deep")
    if isinstance(node, ast.Constant) and type(node.value) is int:  # bool is an int subclass: excluded
        literals.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _walk(node.operand, depth + 1, literals, steps)
        return None if value is None else -value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left = _walk(node.left, depth + 1, literals, steps)
        right = _walk(node.right, depth + 1, literals, steps)
        if left is None or right is None:
            return None
        symbol = _OPS[type(node.op)]
        if symbol == "/" and right == 0:
            return None
        value = _apply(symbol, left, right)
        if steps is not None:
            steps.append(f"{_shown(left)} {symbol} {_shown(right)} = {value}")
        return value
    raise _Invalid(type(node).__name__)


Parsed = tuple[Fraction | None, list[int], int | None]  # (value, integer literals, the stated "= n")


def evaluate_equation(text: str, steps: list[str] | None = None) -> Parsed | None:
    """(value, integer literals, the stated ``= n`` or None) of an answer, or None if malformed.

    The value is None when the expression divides by zero. Nothing is ever executed: the text
    must consist of digits, ``+ - * / ( )`` and spaces, and its syntax tree is walked by hand.
    """
    text = text.strip()
    if len(text) > MAX_CHARS:
        return None
    stated = None
    if suffix := _SUFFIX.search(text):
        stated, text = int(suffix[1]), text[: suffix.start()]
    if not _ALLOWED.fullmatch(text):
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
        literals: list[int] = []
        value = _walk(tree.body, 1, literals, steps)
    except (SyntaxError, ValueError, RecursionError, _Invalid):
        return None
    return value, literals, stated


def extract_equation(completion: str) -> str | None:
    """The content of the last ``<answer>...</answer>``, or None when there is none."""
    found = _ANSWER.findall(completion)
    return found[-1] if found else None


def check(completion: str, example: Mapping[str, Any]) -> tuple[bool, bool]:
    """(well formed, correct): an allowed expression in the last answer tag; and it solves ``example``."""
    equation = extract_equation(completion)
    parsed = evaluate_equation(equation) if equation is not None else None
    if parsed is None:
        return False, False
    value, literals, stated = parsed
    target = int(example["target"])
    correct = (
        value == target
        and (stated is None or stated == target)
        and sorted(literals) == sorted(int(n) for n in example["nums"])
    )
    return True, correct


def score(completion: str, example: Mapping[str, Any]) -> float:
    """1.0 for a correct equation, FORMAT_SCORE for a well-formed wrong one, else 0.0."""
    formatted, correct = check(completion, example)
    return 1.0 if correct else FORMAT_SCORE if formatted else 0.0


# Partial credit for a wrong equation, for training only (the benchmark's figure stays exact_acc).
NUMBERS_CREDIT = 0.3  # times the fraction of the given numbers the equation uses (as a multiset)
VALUE_CREDIT = 0.3  # times how close the value comes to the target, given exactly the right numbers


def partial_credit(completion: str, example: Mapping[str, Any]) -> float:
    """A denser training reward: :func:`score`'s 1.0 for a solution, partial credit below it.

    A wrong but well-formed equation gets ``FORMAT_SCORE``, plus ``NUMBERS_CREDIT`` times the share
    of the given numbers it uses (multiset overlap over the larger of the two counts, so extra
    numbers cost as much as missing ones), plus, only when it uses exactly the given numbers,
    ``VALUE_CREDIT`` times ``max(0, 1 - |value - target| / target)``. At most 0.7 without a
    solution, so a solution is always worth more than any near miss; an equation that merely
    states the target (``<answer> 65 </answer>``) earns its numbers' share and no value credit.
    Use it as ``--reward essa.rewards.countdown:partial_credit``; held-out figures stay exact.
    """
    equation = extract_equation(completion)
    parsed = evaluate_equation(equation) if equation is not None else None
    if parsed is None:
        return 0.0
    value, literals, stated = parsed
    target, given = int(example["target"]), [int(n) for n in example["nums"]]
    right_numbers = sorted(literals) == sorted(given)
    if right_numbers and value == target and (stated is None or stated == target):
        return 1.0
    shared = sum((Counter(literals) & Counter(given)).values())  # multiset overlap
    credit = FORMAT_SCORE + NUMBERS_CREDIT * shared / max(len(given), len(literals))
    if right_numbers and value is not None:
        credit += VALUE_CREDIT * max(0.0, 1.0 - abs(float(value) - target) / target)
    return credit


# The per-prompt field behind the headline figure of a before/after comparison (essa.report.heldout).
HEADLINE = "correct"


def eval_fields(response: str, example: Mapping[str, Any]) -> dict[str, float]:
    """Per-example inputs of :func:`aggregate` (computed on the worker by ``essa eval``)."""
    formatted, correct = check(response, example)
    return {"correct": float(correct), "formatted": float(formatted)}


def aggregate(fields: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """``exact_acc``: fraction solved (the standard metric); ``format_acc``: fraction well formed."""
    n = len(fields["correct"])
    if not n:
        raise ValueError("metrics need at least one example")
    return {"exact_acc": sum(fields["correct"]) / n, "format_acc": sum(fields["formatted"]) / n}


# ---- the generator ----------------------------------------------------------------------------

SEED = 20250928  # any fixed number; changing it changes every part
# Index ranges of the stream of unique problems, in stream order.
PARTS = (("test", 500), ("validation", 500), ("train", 2000), ("sft", 2000))
MIN_TARGET, MAX_TARGET = 1, 999
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3


def _operand(text: str, precedence: int, parent: str, right: bool) -> str:
    """``text`` as an operand of ``parent``, parenthesized only where needed."""
    same = precedence == _PRECEDENCE[parent]
    needs = precedence < _PRECEDENCE[parent] or (right and same and parent in "-/")  # a - (b - c)
    return f"({text})" if needs else text


def _draw(rnd, n: int) -> tuple[tuple[int, ...], int, str] | None:
    """One (numbers, target, solution) draw with ``n`` numbers, or None when it is rejected.

    Values are exact rationals kept as (numerator, denominator) integer pairs: the same numbers as
    Fraction, at half the cost (no gcd per step), and all that is read at the end is whether the
    result is an integer in range.
    """
    numbers = tuple(1 + int(rnd() * 99) for _ in range(n))
    items = [(x, 1, str(x), _ATOM) for x in numbers]
    while len(items) > 1:
        i = int(rnd() * len(items))
        j = int(rnd() * (len(items) - 1))
        j += j >= i  # a second, different operand
        op = "+-*/"[int(rnd() * 4)]
        (an, ad, a_text, a_prec), (bn, bd, b_text, b_prec) = items[i], items[j]
        if op == "+":
            num, den = an * bd + bn * ad, ad * bd
        elif op == "-":
            num, den = an * bd - bn * ad, ad * bd
        elif op == "*":
            num, den = an * bn, ad * bd
        elif bn == 0:
            return None
        else:
            num, den = an * bd, ad * bn
        text = f"{_operand(a_text, a_prec, op, False)} {op} {_operand(b_text, b_prec, op, True)}"
        items = [item for k, item in enumerate(items) if k != i and k != j]
        items.append((num, den, text, _PRECEDENCE[op]))
    num, den, solution, _ = items[0]
    if num % den or not MIN_TARGET <= num // den <= MAX_TARGET:
        return None
    return numbers, num // den, solution


@functools.lru_cache(maxsize=4)
def generate(count: int, seed: int = SEED) -> tuple[tuple[tuple[int, ...], int, str], ...]:
    """The first ``count`` unique (numbers, target, solution) problems of the stream of ``seed``.

    Each problem draws its n first and then redraws numbers and tree with that n until one is
    accepted, so 3- and 4-number problems stay equally likely after rejection.
    """
    rnd = random.Random(seed).random  # random() only: its sequence is stable across Python versions
    seen: set[tuple[tuple[int, ...], int]] = set()
    problems: list[tuple[tuple[int, ...], int, str]] = []
    while len(problems) < count:
        n = 3 + int(rnd() * 2)
        while (problem := _draw(rnd, n)) is None or (tuple(sorted(problem[0])), problem[1]) in seen:
            pass
        seen.add((tuple(sorted(problem[0])), problem[1]))
        problems.append(problem)
    return tuple(problems)


# ---- the task: splits and prompts -------------------------------------------------------------

HUB_ID = None  # generated here; the public set with the same fields is Jiayi-Pan/Countdown-Tasks-3to4
SYSTEM_PROMPT = (
    "You are a helpful assistant. Work the puzzle out briefly, then give the final equation in <answer> </answer> tags."
)
SFT_SPLIT = "sft"


def load_splits(data_dir: Path | None = None) -> dict[str, list[dict]]:
    """The four fixed parts (see the module docstring); ``data_dir`` is ignored."""
    problems = generate(sum(size for _, size in PARTS))
    splits, start = {}, 0
    for name, size in PARTS:
        rows = problems[start : start + size]
        splits[name] = [{"nums": list(n), "target": t, "solution": s} for n, t, s in rows]
        start += size
    return splits


def prompt(example: Mapping[str, Any]) -> str:
    nums = ", ".join(str(int(n)) for n in example["nums"])
    return (
        f"Using the numbers [{nums}], create an equation that equals {int(example['target'])}. "
        "You can use basic arithmetic operations (+, -, *, /) and each number must be used exactly once. "
        "Show your work, then give the final equation in <answer> </answer> tags, "
        "for example <answer> (1 + 2) / 3 </answer>."
    )


def messages(example: Mapping[str, Any], system_prompt: str) -> list[dict]:
    return chat_messages(system_prompt, prompt(example))


def reference_response(example: Mapping[str, Any]) -> str:
    """The solution as a model should write it: its steps on one line, then the answer tag."""
    steps: list[str] = []
    parsed = evaluate_equation(str(example["solution"]), steps)
    if parsed is None or parsed[0] != int(example["target"]):
        raise ValueError(
            f"Countdown solution {example['solution']!r} is not an allowed expression equal to {example['target']}"
        )
    return f"{', '.join(steps)}.\n<answer> {example['solution']} </answer>"
