"""A stand-in for VLLMEngine in pool tests: deterministic text, no model, faults on demand.

The completion for candidate x and prompt p is f"{sum(x):.6f}|{p}" (sum 0 for the base model),
so a reward that parses the number gives known per-candidate scores. Behaviour is set through
the actor's environment (`WorkerSpec.env`) and read on every generate() call:

- ESSA_FAKE_DELAY_S: seconds every call sleeps (default 0).
- ESSA_FAKE_RAISE: "ExceptionName: message" (a builtin exception) raised by every call.
- ESSA_FAKE_MARKER: a file path. The first call that finds the file deletes it and acts on its
  text: empty or "crash" ends the process (os._exit(1), which kills the Ray actor); "sleep S"
  sleeps S seconds; "raise ExceptionName: message" raises. Deleting before acting makes it
  happen exactly once, whichever actor gets there first.
- ESSA_FAKE_START_MARKER: a file path read when an engine starts. "once": the first start that
  finds it deletes it and fails; "always": every start fails while the file is there.

Ray workers import this module as `fake_engine`: the tests put this folder on the actors'
PYTHONPATH through `WorkerSpec.env`.
"""

from __future__ import annotations

import builtins
import os
import time

import numpy as np

from essa.workers.engine import Completion, EngineOptions


class FakeTokenizer:
    def apply_chat_template(
        self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = True
    ) -> str:
        return "\n".join(str(m["content"]) for m in messages)


class FakeEngine:
    """Same interface as VLLMEngine: generate(prompts, sampling, vectors), tokenizer(), close()."""

    def __init__(self, options: EngineOptions, basis):
        self.options, self.basis = options, basis
        self.calls = 0
        _fail_start_on_marker(os.environ.get("ESSA_FAKE_START_MARKER"))

    def tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    def generate(
        self, prompts: list[str], sampling: dict, vectors: np.ndarray | None
    ) -> tuple[list[list[Completion]], dict[str, float]]:
        start = time.perf_counter()
        self.calls += 1
        _act_on_marker(os.environ.get("ESSA_FAKE_MARKER"))
        if os.environ.get("ESSA_FAKE_RAISE"):
            raise _exception(os.environ["ESSA_FAKE_RAISE"])
        time.sleep(float(os.environ.get("ESSA_FAKE_DELAY_S", "0")))
        sums = [0.0] if vectors is None else [float(np.sum(x)) for x in vectors]
        rows = [[_completion(f"{s:.6f}|{p}") for p in prompts] for s in sums]
        return rows, {"apply": 0.0, "generate": time.perf_counter() - start}

    def close(self) -> None:
        pass


def _completion(text: str) -> Completion:
    return Completion(text, tokens=len(text))


def _act_on_marker(path: str | None) -> None:
    if not path:
        return
    try:
        with open(path) as f:
            action = f.read().strip()
        os.unlink(path)  # only one caller succeeds: the others see FileNotFoundError
    except FileNotFoundError:
        return
    if action in ("", "crash"):
        os._exit(1)
    if action.startswith("sleep "):
        time.sleep(float(action.split()[1]))
    elif action.startswith("raise "):
        raise _exception(action[len("raise ") :])


def _fail_start_on_marker(path: str | None) -> None:
    try:
        with open(path or "") as f:
            mode = f.read().strip()
        if mode == "once":
            os.unlink(path)
    except FileNotFoundError:
        return
    raise RuntimeError(f"the fake engine failed to load ({mode})")


def _exception(spec: str) -> Exception:
    name, _, message = spec.partition(":")
    return getattr(builtins, name.strip())(message.strip())
