"""Dense example rewards in [0, 1], for trying essa and for checking that a search learns.

Each is an ordinary reward plugin, `score(completion, example) -> float`:

    essa align --task gsm8k --reward examples/rewards/dense.py:grounded

None of them is a benchmark: they reward a style, and a small model moves them within a few
generations, which makes them good for seeing the search work (tests/test_e2e_learning.py).
"""

from __future__ import annotations

import math
import re

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def grounded(completion: str, example: dict) -> float:
    """Fraction of the completion's words that also occur in the question (0 for an empty answer)."""
    words = _words(completion)
    if not words:
        return 0.0
    question = set(_words(str(example.get("question") or example.get("prompt") or "")))
    return sum(w in question for w in words) / len(words)


def digits(completion: str, example: dict) -> float:
    """Fraction of the completion's words that contain a digit: rewards working with numbers."""
    words = completion.split()
    return sum(any(c.isdigit() for c in w) for w in words) / len(words) if words else 0.0


def concise(completion: str, example: dict) -> float:
    """exp(-words / 50): 1 for an empty answer, 0.37 at 50 words; shorter is better, smoothly."""
    return math.exp(-len(completion.split()) / 50)
