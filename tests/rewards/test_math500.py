"""Tests for essa.rewards.math500: boxed extraction, normalization, equivalence, score, splits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from essa.rewards.math500 import (
    HUB_ID,
    SYSTEM_PROMPT,
    extract_answer,
    is_equiv,
    last_boxed,
    load_splits,
    messages,
    normalize_answer,
    score,
)

# The repo sits at /work/main and shared data at /work/shared/data; parents[3] is /work.
DATA_DIR = Path(os.environ.get("ESSA_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
DATA_FILE = DATA_DIR / "math500" / "test.jsonl"
needs_data = pytest.mark.skipif(not DATA_FILE.is_file(), reason=f"no MATH-500 data at {DATA_FILE}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{5}.", "5"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{\\{2\\}}}", "\\frac{\\sqrt{3}}{\\{2\\}}"),
        ("$\\boxed{ \\left( 3, \\frac{\\pi}{2} \\right) }$", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\fbox{7}", "7"),
        ("\\boxed 5$ and more", "5"),
        ("\\boxed{3} and a truncated \\boxed{4", "3"),
        ("\\boxed{", None),
        ("no box here", None),
        ("\\boxedx{5}", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("\\dfrac{17}{50}", "\\frac{17}{50}"),
        ("\\tfrac12", "\\frac{1}{2}"),
        ("\\frac 34", "\\frac{3}{4}"),
        ("\\frac9{19}", "\\frac{9}{19}"),
        ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}"),
        ("11\\sqrt2", "11\\sqrt{2}"),
        ("\\sqrt[3]{2}", "\\sqrt[3]{2}"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("\\$18.90", "18.90"),
        ("50\\%", "50"),
        ("15\\mbox{ cm}^2", "15"),
        ("5.4 \\text{ cents}", "5.4"),
        ("30 degrees", "30"),
        ("10,\\!080", "10080"),
        ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
        ("\\$32,\\!348", "32348"),
        ("1,000", "1000"),
        ("$58,500$.", "58500"),
        ("1, 000", "1,000"),  # a space after the comma: a list, not a number
        (".0000672", "0.0000672"),
        ("-.5", "-0.5"),
        ("x = 5", "5"),
        ("k=2", "2"),
        ("y = 2x + 3", "2x+3"),
        ("5x - 7y + 11z + 4 = 0", "5x-7y+11z+4=0"),
        ("x \\in [-2,7]", "[-2,7]"),
        ("\\text{(C)}", "C"),
        ("(b)", "B"),
        ("\\text{Evelyn}", "evelyn"),
        ("4210_{5}", "4210_5"),
        ("3/4", "\\frac{3}{4}"),
        ("5.", "5"),
        ("\\boxed{7}", "7"),
        ("\\(\\frac{1}{2}\\)", "\\frac{1}{2}"),
        ("1 \\text{ and } 2", "1,2"),
        ("\\cot x", "\\cot x"),
        ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        # numbers, fractions, decimals
        ("0.5", "\\frac{1}{2}", True),
        ("\\frac12", "\\frac{1}{2}", True),
        ("1/2", "\\dfrac{1}{2}", True),
        (".35625", "\\frac{57}{160}", True),
        ("18.9", "\\$18.90", True),
        ("10080", "10,\\!080", True),
        ("1,000", "1000", True),
        ("3.0", "3", True),
        ("137.5", "137 \\frac{1}{2}", True),  # a MATH mixed number
        ("\\frac{9}{5}", "1\\frac{4}{5}", True),
        ("\\frac{1}{2}", "\\frac{1}{3}", False),
        ("2", "-2", False),
        ("0.333", "\\frac{1}{3}", False),
        ("1000", "100", False),
        # radicals, pi, complex numbers
        ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}", True),
        ("\\sqrt{12}", "2\\sqrt{3}", True),
        ("\\sqrt[3]{8}", "2", True),
        ("\\sqrt{2}", "2", False),
        ("\\frac12\\pi", "\\frac{\\pi}{2}", True),
        ("\\pi/2", "\\frac{\\pi}{2}", True),
        ("3.14", "\\pi", False),
        ("7i - 2", "-2 + 7i", True),
        ("-2 - 7i", "-2 + 7i", False),
        # expressions with variables
        ("x^2", "x^3", False),
        ("2x+3", "y = 2x + 3", True),
        ("3+2x", "y = 2x + 3", True),
        ("(b+2)(a+5)", "(a+5)(b+2)", True),
        ("ab+2a+5b+10", "(a+5)(b+2)", True),
        ("2k", "2n", False),
        ("2k+2", "2(k+1)", True),
        ("\\cot x", "\\cot x", True),
        ("\\frac{\\cos x}{\\sin x}", "\\cot x", True),
        ("-5x+7y-11z-4=0", "5x - 7y + 11z + 4 = 0", True),
        ("5x-7y+11z=-4", "5x - 7y + 11z + 4 = 0", True),
        ("5x-7y+11z-4=0", "5x - 7y + 11z + 4 = 0", False),
        # degrees, units, text answers, multiple choice
        ("30^\\circ", "30", True),
        ("30", "30^\\circ", True),
        ("106", "106^\\circ", True),
        ("15", "15\\mbox{ cm}^2", True),
        ("C", "\\text{(C)}", True),
        ("(C)", "\\text{(C)}", True),
        ("B", "\\text{(C)}", False),
        ("Evelyn", "\\text{Evelyn}", True),
        ("\\text{Navin}", "\\text{Evelyn}", False),
        ("East", "\\text{east}", True),
        ("ellipse", "\\text{ellipse}", True),
        ("parabola", "\\text{ellipse}", False),
        # tuples and intervals: element-wise, brackets must match
        ("(-\\infty,3]", "(-\\infty, 3]", True),
        ("(1,2)", "[1,2]", False),
        ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("(\\frac{\\pi}{2}, 3)", "\\left( 3, \\frac{\\pi}{2} \\right)", False),
        ("(0.6,\\frac83]", "\\left(\\frac{3}{5},\\frac{8}{3}\\right]", True),
        ("(0.6,\\frac83)", "\\left(\\frac{3}{5},\\frac{8}{3}\\right]", False),
        ("(-\\infty,2)\\cup(3,\\infty)", "(-\\infty, 2) \\cup (3, \\infty)", True),
        ("(3,\\infty)\\cup(-\\infty,2)", "(-\\infty, 2) \\cup (3, \\infty)", False),
        ("[-2,7]", "x \\in [-2,7]", True),
        ("(1,-16,-4,43)", "(1,-16,-4,43)", True),
        ("(1,-16,-4)", "(1,-16,-4,43)", False),
        # solution lists in any order, set braces, \pm
        ("-2, 1", "1,-2", True),
        ("x=-2, x=1", "1,-2", True),
        ("1, 2", "1,-2", False),
        ("1", "1,-2", False),
        ("7, 5, 3", "3, 5, 7", True),
        ("1+\\sqrt{19}, 1-\\sqrt{19}", "1 \\pm \\sqrt{19}", True),
        ("-2, 1-\\sqrt5, 1+\\sqrt5", "\\{1\\pm\\sqrt{5},-2\\}", True),
        ("1+\\sqrt{19}", "1 \\pm \\sqrt{19}", False),
        # base-subscript answers compare as strings
        ("4210_5", "4210_{5}", True),
        ("4210", "4210_{5}", False),
        ("2516_{8}", "2516_8", True),
        ("2516_7", "2516_8", False),
        # matrices: same shape, element-wise
        (
            "\\begin{pmatrix}-\\frac13\\\\\\frac23\\\\\\frac53\\end{pmatrix}",
            "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
            True,
        ),
        (
            "\\begin{bmatrix} -1 & 0 \\\\ 0 & -1 \\end{bmatrix}",
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
            True,
        ),  # delimiters do not matter
        (
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & 1 \\end{pmatrix}",
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
            False,
        ),
        ("\\begin{pmatrix} -2 \\\\ -14 \\end{pmatrix}", "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}", False),
        ("(-2,-14,-7)", "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}", False),
        # unreadable, empty or hostile input is simply not equivalent
        (None, "5", False),
        ("", "5", False),
        ("\\frac{1}{0}", "\\infty", False),
        ("10^{10^{10^{10}}}", "1", False),  # power towers are refused, not evaluated
        ("2^{100000000}", "1", False),  # beyond float range: still compared, not overflowed
        ("\\sin(10^{999999999})", "0", False),  # a giant function argument is refused, not reduced
        ("\\sin(10^{50})", "\\sin(10^{50})+0", True),
        ("2^{100000000}", "2\\cdot 2^{99999999}", True),
        ("x" * 500, "x" * 499, False),
        ("\\unknown{3}", "3", False),
        ("\\frac{1}{2", "\\frac{1}{2}", False),
    ],
)
def test_is_equiv(predicted, reference, expected):
    assert is_equiv(predicted, reference) is expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("... so the answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{3}. Wait, actually \\boxed{4}", "4"),
        ("Final Answer: The final answer is $\\frac{\\pi}{2}$. I hope it is correct.", "\\frac{\\pi}{2}"),
        ("The answer is 42.", "42"),
        ("the answer is 3.5", "3.5"),
        ("The answer is 5. Then the answer is 6.\nMore text", "6"),
        ("Answer: (C)", "(C)"),
        ("The answer is \\boxed{7}; the answer is 8", "7"),  # a box wins over prose
        ("I do not know.", None),
        ("", None),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("Thus $\\boxed{0.5}$.", "\\frac{1}{2}", 1.0),
        ("Thus $\\boxed{\\frac13}$.", "\\frac{1}{2}", 0.0),
        ("The final answer is $(3,\\frac{\\pi}{2})$.", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
        ("no answer at all", "5", 0.0),
        ("\\boxed{}", "5", 0.0),
        ("\\boxed{\\text{(B)}}", "\\text{(B)}", 1.0),
        ("\\boxed{x=5}", "x=5", 1.0),
    ],
)
def test_score(completion, answer, expected):
    assert score(completion, {"problem": "p", "answer": answer}) == expected


def test_prompt_and_messages():
    assert HUB_ID == "HuggingFaceH4/MATH-500"
    assert "\\boxed{}" in SYSTEM_PROMPT
    example = {"problem": "What is $1+1$?", "answer": "2"}
    assert messages(example, "sys") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "What is $1+1$?"},
    ]
    assert messages(example, "") == [{"role": "user", "content": "What is $1+1$?"}]


def _rows() -> list[dict]:
    with DATA_FILE.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@needs_data
def test_every_reference_answer_matches_itself():
    rows = _rows()
    assert len(rows) == 500
    for row in rows:
        assert is_equiv(row["answer"], row["answer"]), row["unique_id"]
        assert score("Working... so $\\boxed{" + row["answer"] + "}$.", row) == 1.0, row["unique_id"]


@needs_data
def test_solution_boxes_agree_with_answers():
    rows = _rows()
    misjudged = [
        (row["unique_id"], last_boxed(row["solution"]), row["answer"])
        for row in rows
        if not is_equiv(last_boxed(row["solution"]), row["answer"])
    ]
    assert len(rows) - len(misjudged) >= 490, misjudged


@needs_data
def test_splits_partition_the_500_problems():
    splits = load_splits(DATA_DIR)
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 300, "validation": 100, "test": 100}
    ids = [row["unique_id"] for rows in splits.values() for row in rows]
    assert len(set(ids)) == 500
    assert set(ids) == {row["unique_id"] for row in _rows()}
    assert load_splits(DATA_DIR)["train"] == splits["train"]  # the order is fixed


@needs_data
def test_reformatted_answers_still_match():
    # The same answer restyled as a model might write it: display fractions, math dollars, spaces.
    for row in _rows():
        restyled = "$ " + row["answer"].replace("\\frac", "\\dfrac").replace("+", " + ") + " $."
        assert is_equiv(restyled, row["answer"]), (row["unique_id"], restyled)


@needs_data
def test_neighbouring_answers_are_told_apart():
    # Consecutive rows are unrelated problems: their answers match only when they normalize alike.
    answers = [row["answer"] for row in _rows()]
    for a, b in zip(answers, answers[1:]):
        assert is_equiv(a, b) == (normalize_answer(a) == normalize_answer(b)), (a, b)
