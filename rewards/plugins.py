"""User reward functions: loading them by name, and calling them safely.

A reward is a function ``(completion: str, example: dict) -> float``, or, marked with
:func:`batch_reward`, ``(completions: list[str], examples: list[dict]) -> list[float]`` (called
once per candidate with all of its completions: a reward model or a remote judge scores them
in one pass). It is named by
- ``path/to/file.py:function`` (the file is imported as a module),
- ``package.module:function`` (imported from the environment), or
- ``name``, an entry point in the group ``essa.rewards`` of an installed package.

A reward written for TRL's GRPOTrainer, ``fn(completions, **kwargs) -> list[float]`` (a
parameter named ``completions`` and a ``**kwargs``), is used as it is (:func:`is_trl_reward`,
:func:`trl_batch_reward`): it is called once per candidate, in TRL's conversational form, since
essa's prompts are chats.

`SafeReward` checks every value: an exception or a result that is not a finite number is an
error that names the reward and the example, or, with ``task.reward_errors=zero``, scores 0 and
is counted (the count is logged per generation).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import math
import numbers
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "essa.rewards"
RewardFn = Callable[[str, dict], float]


class RewardError(RuntimeError):
    """A reward function failed to load, raised, or returned something that is not a number."""


def batch_reward(fn: Callable) -> Callable:
    """Mark `fn(completions, examples) -> list[float]` as a batch-form reward (a decorator)."""
    fn.essa_batch = True  # type: ignore[attr-defined]  # a marker attribute on a function object
    return fn


def is_trl_reward(fn: Callable) -> bool:
    """True for TRL's reward convention: a parameter named ``completions`` and a ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or a C function: not a TRL reward
        return False
    return any(p.name == "completions" for p in params) and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def trl_batch_reward(fn: Callable, build_messages: Callable[[dict], list[dict]]) -> Callable:
    """A batch-form essa reward that calls a TRL reward as GRPOTrainer does on a conversational dataset.

    Keyword arguments: ``prompts`` (each example's chat messages, as the model saw them),
    ``completions`` (each a one-message list ``[{"role": "assistant", "content": text}]``) and every
    field of the examples as a list (GRPOTrainer's dataset columns, ``answer``, ``target`` and so on).
    ``completion_ids`` and ``trainer_state`` are not passed (essa's workers score text), so a TRL reward
    that needs them fails with its own error, which names them.
    """

    def reward(completions: list[str], examples: list[dict]) -> list[float]:
        keys = dict.fromkeys(k for example in examples for k in example if k not in ("prompts", "completions"))
        columns = {key: [example.get(key) for example in examples] for key in keys}
        return fn(
            prompts=[build_messages(example) for example in examples],
            completions=[[{"role": "assistant", "content": text}] for text in completions],
            **columns,
        )

    reward.essa_batch = True  # type: ignore[attr-defined]  # a marker attribute on a function object
    reward.__name__ = getattr(fn, "__name__", "trl_reward")
    return reward


def resolve_reward_spec(spec: str) -> str:
    """Make a file-based spec absolute, so that workers with another working directory find it."""
    path, sep, function = spec.rpartition(":")
    if sep and path.endswith(".py"):
        return f"{Path(path).expanduser().resolve()}:{function}"
    return spec


def load_reward(spec: str) -> RewardFn:
    path, sep, function = spec.rpartition(":")
    if not sep:
        return _from_entry_point(spec)
    if not function:
        raise RewardError(f"reward {spec!r} names no function; use FILE.py:function or package.module:function")
    if not path:
        raise RewardError(
            f"reward {spec!r} names no module or file before the colon; use FILE.py:function or package.module:function"
        )
    if path.endswith(".py"):
        module = _import_file(Path(path), spec)
    else:
        with _importing(f"reward {spec!r}: cannot import module {path!r}"):
            module = importlib.import_module(path)
    fn = getattr(module, function, None)
    if not callable(fn):
        raise RewardError(f"reward {spec!r}: {path} has no function {function!r}")
    return fn


def _import_file(path: Path, spec: str):
    if path.is_dir():
        raise RewardError(f"reward {spec!r}: {path} is a folder; name the Python file that defines the function")
    if not path.is_file():
        raise RewardError(f"reward {spec!r}: file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"essa_user_reward_{abs(hash(str(path)))}", path)
    assert module_spec is not None and module_spec.loader is not None  # a .py file always gets a source loader
    module = importlib.util.module_from_spec(module_spec)
    with _importing(f"reward {spec!r}: importing {path} failed"):
        module_spec.loader.exec_module(module)
    return module


@contextmanager
def _importing(failed: str):
    """Any failure while a plugin is imported, its sys.exit() and KeyboardInterrupt included, as a
    RewardError that names the plugin (`failed` says which and how)."""
    try:
        yield
    except SystemExit as exc:
        raise RewardError(
            f"{failed} (it called sys.exit({exc.code!r}) while being imported; a reward module must not exit)"
        ) from None
    except KeyboardInterrupt as exc:
        if exc.args and isinstance(exc.args[0], int):  # essa's SIGTERM handler (essa.cli): the user's stop
            raise
        raise RewardError(
            f"{failed} (KeyboardInterrupt while it was imported: the module raised it, or Ctrl-C was pressed)"
        ) from None
    except Exception as exc:
        raise RewardError(f"{failed} ({type(exc).__name__}: {exc})") from exc


def _from_entry_point(name: str) -> RewardFn:
    points = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name not in points:
        known = ", ".join(sorted(points)) or "none installed"
        raise RewardError(
            f"unknown reward {name!r}: not FILE.py:function or module:function, and no entry point "
            f"{name!r} in group {ENTRY_POINT_GROUP!r} (installed: {known})"
        )
    with _importing(f"reward entry point {name!r} failed to load"):
        loaded = points[name].load()
    return loaded


class SafeReward:
    """Calls a reward and validates its value; on failure raises or scores 0 and counts."""

    fn: Callable[..., Any]  # a RewardFn, or a batch-form reward (see batch_reward) when self.batch

    def __init__(self, fn: RewardFn, name: str, on_error: str = "raise"):
        if on_error not in ("raise", "zero"):
            raise ValueError(f"task.reward_errors={on_error!r}: choose raise or zero")
        self.fn, self.name, self.on_error = fn, name, on_error
        self.batch = bool(getattr(fn, "essa_batch", False))
        self.errors = 0

    def __call__(self, completion: str, example: dict, where: str) -> float:
        return self.many([completion], [example], [where])[0]

    def many(self, completions: list[str], examples: list[dict], wheres: list[str]) -> list[float]:
        """Rewards of `completions`: one call of a batch-form reward, else one call per completion."""
        if not self.batch:
            return [
                self._checked(lambda c=c, e=e: [self.fn(c, e)], c, w)[0]
                for c, e, w in zip(completions, examples, wheres)
            ]
        if not completions:
            return []
        where = wheres[0] if len(wheres) == 1 else f"{wheres[0]} .. {wheres[-1]} (one batch call)"
        return self._checked(
            lambda: self.fn(list(completions), list(examples)), completions[0], where, len(completions)
        )

    def _checked(self, call, completion: str, where: str, n: int = 1) -> list[float]:
        try:
            values = list(call())
            if len(values) != n:
                raise TypeError(f"returned {len(values)} values for {n} completions")
            for k, value in enumerate(values):
                if not isinstance(value, numbers.Real) or not math.isfinite(value):  # bools count as 1/0
                    at = f" at position {k}" if n > 1 else ""
                    raise TypeError(f"returned {value!r}{at}, not a finite number")
            return [float(v) for v in values]
        except Exception as exc:
            if self.on_error == "zero":
                self.errors += n
                return [0.0] * n
            raise RewardError(
                f"reward {self.name!r} failed on {where} ({type(exc).__name__}: {exc}); completion starts "
                f"{completion[:80]!r}. Checkpoints written so far are intact: fix the reward and continue with "
                "essa align --resume RUN_DIR (--allow-change reward once its file changed), or start a new run "
                "with task.reward_errors=zero to score such cases 0 and count them."
            ) from exc
