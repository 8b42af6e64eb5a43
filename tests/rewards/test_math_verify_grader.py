"""MATH-500's score through math-verify (rewards/math_verify_grader.py): the real math-verify in its
child process, where it disagrees with essa's own grader, and its time bound from a worker thread."""

from __future__ import annotations

import threading

import pytest

from essa.rewards.math500 import extract_answer, is_equiv, score
from essa.rewards.math_verify_grader import MathVerify, MathVerifyError, math_verify_equiv

pytest.importorskip("math_verify")


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("The solutions are $\\boxed{3}$ and $\\boxed{5}$.", "3, 5"),  # two boxes, one answer
        ("$\\boxed{2x + 3 = y}$", "y = 2x + 3"),  # an equation written the other way round
        ("$\\boxed{\\textnormal{(C)}}$", "\\text{(C)}"),
        ("$\\boxed{\\cfrac{1}{2}}$", "\\frac{1}{2}"),
    ],
)
def test_math_verify_credits_forms_the_own_grader_misses(completion, answer):
    predicted = extract_answer(completion)
    assert not (predicted is not None and is_equiv(predicted, answer))  # why math-verify decides
    assert score(completion, {"answer": answer}) == 1.0


@pytest.mark.parametrize(
    ("completion", "answer"),
    [("$\\boxed{4210}$", "4210_{5}"), ("$\\boxed{2516_7}$", "2516_8")],
)
def test_numerals_in_another_base_are_graded_by_the_own_grader(completion, answer):
    assert math_verify_equiv(completion, answer) is True  # math-verify drops the base
    assert score(completion, {"answer": answer}) == 0.0
    assert score("$\\boxed{" + answer.replace("{", "").replace("}", "") + "}$", {"answer": answer}) == 1.0


def test_an_answer_math_verify_cannot_read_falls_back_to_the_own_grader():
    assert math_verify_equiv("Answer: (C)", "(C)") is None
    assert score("Answer: (C)", {"answer": "(C)"}) == 1.0
    assert score("Answer: (D)", {"answer": "(C)"}) == 0.0


def test_a_hedge_between_two_boxes_is_not_credited():
    assert score("\\boxed{3}. Wait, actually \\boxed{4}", {"answer": "4"}) == 0.0
    assert score("\\boxed{4}", {"answer": "4"}) == 1.0


def test_a_comparison_past_the_limit_is_killed_from_a_worker_thread_and_the_next_one_works():
    grader = MathVerify(limit_s=0.5)
    try:
        verdicts: list[bool | None] = []
        worker = threading.Thread(
            target=lambda: verdicts.extend(
                [grader("$\\boxed{\\sin(10^{999999999})}$", "0"), grader("$\\boxed{2}$", "2")]
            )
        )
        worker.start()
        worker.join(timeout=120)
        assert not worker.is_alive()
        assert verdicts == [False, True]
        assert grader.timeouts == 1
    finally:
        grader.close()


def test_math_verify_missing_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "math_verify.py").write_text("raise ImportError('no math_verify here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    grader = MathVerify()
    with pytest.raises(MathVerifyError, match="pip install 'math-verify"):
        grader("$\\boxed{2}$", "2")
