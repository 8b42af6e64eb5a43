"""MATH-500 graders side by side: essa's own (extract_answer + is_equiv), math-verify, and the score
essa uses (math-verify, with the own grader for other bases and unread answers; rewards/math500.py).

Prints how many of the 500 reference answers each accepts (the answer against itself, inside a
\\boxed{} sentence, and the reference solution text), then a table of answer forms on which they
may disagree. Offline: reads $ESSA_DATA_DIR/math500/test.jsonl.

    python scripts/compare_math_graders.py
"""

from __future__ import annotations

import sys

from essa.rewards.data import DataError, data_dir, read_jsonl
from essa.rewards.math500 import extract_answer, is_equiv, score
from essa.rewards.math_verify_grader import math_verify_equiv

FORMS = [
    ("two boxes, one answer", r"The solutions are $\boxed{3}$ and $\boxed{5}$.", "3, 5"),
    ("equation rearranged", r"$\boxed{y = 3 + 2x}$", "y = 2x + 3"),
    ("equation, sides swapped", r"$\boxed{2x + 3 = y}$", "y = 2x + 3"),
    ("\\textnormal", r"$\boxed{\textnormal{(C)}}$", r"\text{(C)}"),
    ("\\cfrac", r"$\boxed{\cfrac{1}{2}}$", r"\frac{1}{2}"),
    ("a list with 'and'", r"$\boxed{1 \text{ and } 2}$", "1, 2"),
    ("'answer is' in prose", r"Therefore the answer is $\frac{3}{4}$.", r"\frac34"),
    ("'Answer:' and a letter", "Answer: (C)", "(C)"),
    ("decimal for a fraction", r"$\boxed{0.75}$", r"\dfrac{3}{4}"),
    ("union, other order", r"$\boxed{(3,\infty)\cup(-\infty,2)}$", r"(-\infty, 2) \cup (3, \infty)"),
    ("another base, base dropped", r"$\boxed{4210}$", "4210_{5}"),
    ("another base, wrong base", r"$\boxed{2516_7}$", "2516_8"),
    ("a hedge: two boxes", r"\boxed{3}. Wait, actually \boxed{4}", "4"),
    ("a wrong value", r"$\boxed{7}$", "8"),
]


def own(completion: str, reference: str) -> bool:
    predicted = extract_answer(completion)
    return predicted is not None and is_equiv(predicted, reference)


def verdicts(completion: str, reference: str) -> tuple[bool, bool | None, bool]:
    return (
        own(completion, reference),
        math_verify_equiv(completion, reference),
        score(completion, {"answer": reference}) == 1,
    )


def main() -> None:
    folder = data_dir(None)
    if folder is None:
        sys.exit("compare_math_graders: set $ESSA_DATA_DIR to the folder holding math500/test.jsonl")
    try:
        rows = read_jsonl(folder / "math500" / "test.jsonl", required=("answer", "solution"))
    except DataError as exc:
        sys.exit(f"compare_math_graders: {exc}")
    print(f"| {len(rows)} MATH-500 references, graded against the answer | own grader | math-verify | essa's score |")
    print("|---|---|---|---|")
    for name, text in [
        ("the answer itself", lambda r: "$" + r["answer"] + "$"),
        ("in a sentence: The answer is $\\boxed{…}$.", lambda r: "The answer is $\\boxed{" + r["answer"] + "}$."),
        ("the reference solution", lambda r: r["solution"]),
    ]:
        counts = [0, 0, 0]
        for row in rows:
            for i, ok in enumerate(verdicts(text(row), row["answer"])):
                counts[i] += bool(ok)
        print(f"| {name} | {counts[0]} | {counts[1]} | {counts[2]} |")
    print()
    print("| form | completion | reference | own grader | math-verify | essa's score |")
    print("|---|---|---|---|---|---|")
    mark = {True: "yes", False: "no", None: "no answer read"}
    for name, completion, reference in FORMS:
        o, m, s = verdicts(completion, reference)
        print(f"| {name} | `{completion}` | `{reference}` | {mark[o]} | {mark[m]} | {mark[s]} |")


if __name__ == "__main__":
    main()
