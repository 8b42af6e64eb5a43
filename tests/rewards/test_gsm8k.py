"""Tests for essa.rewards.gsm8k: normalization, answer extraction, reference parsing, score."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from essa.rewards.gsm8k import extract_answer, normalize_number, reference_answer, score

# The repo sits at /work/main and shared data at /work/shared/data; parents[3] is /work.
DATA_DIR = Path(os.environ.get("ESSA_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", "42"),
        ("42.0", "42"),
        ("42.50", "42.5"),
        ("42.", "42"),
        ("$1,000", "1000"),
        ("\\$5", "5"),
        ("1E+3", "1000"),
        ("1.5e2", "150"),
        ("-0", "0"),
        ("-0.00", "0"),
        ("\u22125", "-5"),
        (".5", "0.5"),
        ("-$3.10", "-3.1"),
        ("  7  ", "7"),
        ("100", "100"),  # trailing zeros of an integer are kept
        ("abc", None),
        ("", None),
        ("1, 2", None),
        ("inf", None),
        ("NaN", None),
        ("1E+999999999", None),
    ],
)
def test_normalize_number(text: str, expected: str | None) -> None:
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        # plain numbers and formats
        ("42", "42"),
        ("3.0", "3"),
        ("It costs $4.50.", "4.5"),
        ("The total is 1,234,567 apples.", "1234567"),
        ("About 42%", "42"),
        ("She earns 42 dollars", "42"),
        ("Half is .5 of it", "0.5"),
        ("The change is -5", "-5"),
        ("The change is \u22125", "-5"),
        ("He lost -$20 today", "-20"),
        ("16-3-4 = 9", "9"),  # arithmetic minus is not a sign
        ("So we get 10 - 3", "3"),
        ("1, 2, 3", "3"),  # a list, not 123
        ("1,2,3", "3"),
        ("Pay 1,2345 now", "2345"),  # not a valid thousands group
        ("CO2 emissions", None),  # digits glued to a word are not a number
        # no answer
        ("no numbers here", None),
        ("", None),
        ("#### ", None),
        ("\\boxed{}", None),
        # #### wins over everything
        ("#### 42", "42"),
        ("#### -3", "-3"),
        ("#### 1,000", "1000"),
        ("Step: 5 + 6 = 11\n#### 11\n\nQuestion: next one has 7 apples", "11"),
        ("#### 42\nThe answer is 7 and \\boxed{9}", "42"),
        ("#### 1\nlater\n#### 2", "2"),
        ("####\n5", "5"),  # the answer may sit on the next line
        ("#### $18.00.", "18"),
        # \boxed wins over "answer is" and over a later stray number
        ("So \\boxed{12} and then 99 more words", "12"),
        ("The answer is 7. \\boxed{8}", "8"),
        ("\\boxed{\\$42}", "42"),
        ("\\boxed{42\\%}", "42"),
        ("\\boxed{1,000}", "1000"),
        ("\\boxed{-5}", "-5"),
        ("\\boxed{\\frac{3}{4}}", "0.75"),
        ("\\boxed{-\\dfrac{1}{2}}", "-0.5"),
        ("\\boxed{x = 5}", "5"),
        ("\\boxed{42 \\text{cm}^2}", "42"),
        ("\\boxed{\\text{{nested}} 6}", "6"),
        ("\\boxed{3} then \\boxed{4}", "4"),
        ("\\boxed{x} fallback to 8", "8"),  # an empty-of-numbers box is skipped
        ("\\boxed{5", "5"),  # unclosed box ignored, last number used
        # "answer is" wins over the last number
        ("The answer is 1,000.", "1000"),
        ("the final answer is: $42. Check: 40 + 2", "42"),
        ("Answer: 42\nI double-checked 3 times.", "42"),
        ("**Answer:** 17 (from 3 steps)", "17"),
        ("THE ANSWER IS -8 units, not 9", "-8"),
        ("The answer is 3. Actually, the answer is 4, not 5.", "4"),
        ("The answer is:\n\n12 apples then 13", "12"),  # number on the next non-blank line
        ("The answer is below.\n12 apples then 13", "13"),  # marker without a number: fall through
        # last number fallback
        ("There are 3 cats and 5 dogs, so 8 animals", "8"),
        ("Total: 12 + 30 = 42.", "42"),
    ],
)
def test_extract_answer(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


EXAMPLE = {"question": "q", "answer": "Some work 2 + 2 = <<2+2=4>>4\n#### 4"}


@pytest.mark.parametrize(
    ("completion", "example", "expected"),
    [
        ("#### 4", EXAMPLE, 1.0),
        ("The answer is 4.00", EXAMPLE, 1.0),
        ("\\boxed{4}", EXAMPLE, 1.0),
        ("2 + 2 = 4", EXAMPLE, 1.0),
        ("#### 5", EXAMPLE, 0.0),
        ("The answer is 4 or #### 5", EXAMPLE, 0.0),
        ("no idea", EXAMPLE, 0.0),
        ("", EXAMPLE, 0.0),
        ("It is $1,000.", {"answer": "#### 1,000"}, 1.0),
        ("It is -3", {"answer": "x\n#### -3"}, 1.0),
        ("It is 3", {"answer": "x\n#### -3"}, 0.0),
    ],
)
def test_score(completion: str, example: dict, expected: float) -> None:
    assert score(completion, example) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("a\n#### 18", "18"),
        ("a\n#### 1,000", "1000"),
        ("a\n#### -3", "-3"),
        ("a #### 1 \n#### 2.50\n", "2.5"),
    ],
)
def test_reference_answer(answer: str, expected: str) -> None:
    assert reference_answer({"answer": answer}) == expected


@pytest.mark.parametrize(
    "example",
    [
        {"answer": "The result is 18"},
        {"answer": "work\n#### eighteen"},
        {"answer": "work\n#### 18 dollars"},
        {"answer": "work\n####"},
        {"question": "no answer key"},
        {"answer": 18},
    ],
)
def test_reference_answer_malformed(example: dict) -> None:
    with pytest.raises(ValueError):
        reference_answer(example)
    with pytest.raises(ValueError):
        score("#### 18", example)


def test_reference_answer_error_quotes_tail() -> None:
    with pytest.raises(ValueError, match="no final marker"):
        reference_answer({"answer": "long reasoning ... no final marker"})


def test_reference_answer_on_real_data() -> None:
    gsm_dir = DATA_DIR / "gsm8k"
    if not gsm_dir.is_dir():
        pytest.skip(f"GSM8K data not found at {gsm_dir}")
    files = sorted(gsm_dir.glob("*.jsonl"))
    assert {f.name for f in files} >= {"train.jsonl", "test.jsonl"}
    count = 0
    for path in files:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                example = json.loads(line)
                ref = reference_answer(example)
                assert Decimal(ref).is_finite()
                assert normalize_number(ref) == ref  # already canonical
                # The gold solution text, scored against itself, must be correct.
                assert score(example["answer"], example) == 1.0
                count += 1
    assert count > 8000
