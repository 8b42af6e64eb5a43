"""A reward for short GSM8K-style answers that end in '#### <number>' (docs/reward-plugins.md).

    essa align --task gsm8k --init principal --reward examples/rewards/short_answer.py:score

score(completion, example) is deterministic and lies in [0, 1]. It is the product of three parts:

- form: 0 unless the completion's last non-blank line is '#### <number>', the line GSM8K's
  system prompt asks for ('#### 18', '#### $1,000' and '#### -2.5' count; '#### 18 dollars'
  and an answer stated only in prose do not);
- answer: 1 when that number equals the reference, WRONG_ANSWER (0.25) when it does not; an
  example without an 'answer' field has no reference, and then only form and length count;
- length: min(1, MAX_WORDS / words), full credit up to 50 words, half at 100.

The reference is the number after the last '####' of example['answer'] (GSM8K's format), or
the whole field when it has no '####' (a JSONL row with "answer": "42"). A reference that is
not a number is a data error: score raises ValueError, and essa stops, naming the example.
"""

from __future__ import annotations

from decimal import Decimal

from essa.rewards.gsm8k import normalize_number

MAX_WORDS = 50  # answers up to this many words get full length credit
WRONG_ANSWER = 0.25  # credit for a well-formed final line with the wrong number


def final_number(completion: str) -> str | None:
    """The number of the last non-blank line when that line is '#### <number>' (normalized), else None."""
    last_line = completion.rstrip().rpartition("\n")[2].strip()
    if not last_line.startswith("####"):
        return None
    return normalize_number(last_line[len("####") :])


def reference(example: dict) -> str | None:
    """The reference number of `example` (normalized), or None when it has no 'answer' field."""
    answer = example.get("answer")
    if answer is None:
        return None
    value = normalize_number(str(answer).rpartition("####")[2])
    if value is None:
        raise ValueError(f"the reference answer {str(answer)[-60:]!r} does not end in a number")
    return value


def score(completion: str, example: dict) -> float:
    predicted = final_number(completion)
    if predicted is None:
        return 0.0
    expected = reference(example)
    answer = 1.0 if expected is None or Decimal(predicted) == Decimal(expected) else WRONG_ANSWER
    length = min(1.0, MAX_WORDS / len(completion.split()))
    return answer * length
