"""math-verify, Hugging Face's MATH grader (TRL, open-r1 and lighteval score MATH with it), bounded in time.

math-verify bounds its own parsing and comparison with SIGALRM, which works only in a process's
main thread, and essa's rewards run in worker threads, where a hostile answer (a power tower, a
giant function argument) could keep sympy busy for good. So the comparisons run in one child
process per scoring process (``python -m essa.rewards.math_verify_grader``), in the child's main
thread with math-verify's own timeouts on, and the caller waits at most ``limit_s`` for each
verdict: past it the child is killed, the comparison counts as not equivalent, and the next call
starts a new child. Comparisons from several threads take turns (one lock).

The protocol is one JSON line each way: ``[completion, reference]`` in, and ``true``, ``false`` or
``null`` out (null: math-verify read no answer in the completion or the reference, which the caller
may grade another way).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading

LIMIT_S = 20.0  # math-verify's own limits are 5 s to parse and 5 s to compare; this only backs them up
START_LIMIT_S = 120.0  # importing sympy and math-verify in a fresh interpreter


class MathVerifyError(RuntimeError):
    """math-verify could not be started (not installed, or its child process failed at start)."""


def compare(completion: str, reference: str) -> bool | None:
    """math-verify's verdict, in this thread (the child's main thread: its SIGALRM limits work)."""
    from math_verify import parse, verify

    gold = parse("$" + reference + "$")
    predicted = parse(completion)
    if not gold or not predicted:
        return None
    return bool(verify(gold, predicted))


class MathVerify:
    """Callable ``(completion, reference) -> bool | None`` that runs math-verify in a child process."""

    def __init__(self, limit_s: float = LIMIT_S) -> None:
        self.limit_s = float(limit_s)
        self.timeouts = 0  # comparisons that ran past limit_s (each killed its child)
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        atexit.register(self.close)

    def __call__(self, completion: str, reference: str) -> bool | None:
        with self._lock:
            child = self._started()
            assert child.stdin is not None
            child.stdin.write(json.dumps([completion, reference]) + "\n")
            child.stdin.flush()
            line = self._read_line(child, self.limit_s)
            if line is None:  # past the limit, or the child died: not equivalent, and a new child next time
                self.timeouts += 1
                self._kill()
                return False
            return json.loads(line)

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _started(self) -> subprocess.Popen[str]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        self._child = subprocess.Popen(
            [sys.executable, "-m", "essa.rewards.math_verify_grader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # math-verify logs every timeout it hits; the verdict says enough
            text=True,
        )
        hello = self._read_line(self._child, START_LIMIT_S)
        status = json.loads(hello) if hello else {"error": "no answer from the child process"}
        if status.get("error"):
            self._kill()
            raise MathVerifyError(
                f"math-verify could not start ({status['error']}); install it with pip install 'math-verify==0.9.*'"
            )
        return self._child

    @staticmethod
    def _read_line(child: subprocess.Popen[str], limit_s: float) -> str | None:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], limit_s)
        line = child.stdout.readline() if ready else ""
        return line or None

    def _kill(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait()
            self._child = None


_shared: MathVerify | None = None
_shared_lock = threading.Lock()


def math_verify_equiv(completion: str, reference: str) -> bool | None:
    """math-verify's verdict on `completion` against `reference`, from this process's shared child."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MathVerify()
    return _shared(completion, reference)


def _serve() -> None:
    """The child: verdicts on stdin's requests, one JSON line each, on the original stdout."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the replies
    sys.stdout = sys.stderr
    try:
        import math_verify  # noqa: F401 - fail here, at start, with a message, not at the first request
    except Exception as exc:  # noqa: BLE001 - any import failure is reported to the parent the same way
        replies.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        replies.flush()
        return
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in sys.stdin:
        completion, reference = json.loads(line)
        try:
            verdict = compare(completion, reference)
        except Exception:  # noqa: BLE001 - whatever sympy raises, the answer is not equivalent
            verdict = False
        replies.write(json.dumps(verdict) + "\n")
        replies.flush()


if __name__ == "__main__":
    _serve()
