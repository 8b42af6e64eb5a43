"""The interface every search strategy in essa implements.

A strategy is an ask/tell optimizer over a flat float64 vector (the search
space; for essa, the singular values of a LoRA adapter). The driver loop is::

    X = strategy.ask()            # (popsize, dim) candidates
    scores = evaluate(X)          # (popsize,) rewards, HIGHER IS BETTER
    strategy.tell(X, scores)
    if strategy.stop(): ...

Scores are rewards to be maximized. Strategies keep only plain state
(numpy arrays and JSON-serializable scalars / dicts), so a run can be
checkpointed with ``np.savez`` + ``json`` and resumed bit-identically via
``state_dict()`` / ``load_state_dict()``, without pickle.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Strategy(Protocol):
    """Ask/tell maximizer over R^dim with checkpointable plain state."""

    def ask(self) -> np.ndarray:
        """Return the current population, shape (popsize, dim), float64.

        Calling ask() again before tell() returns the same population (the
        one already sampled), so a resumed driver can simply ask again.
        """
        ...

    def tell(self, X: np.ndarray, scores: np.ndarray) -> None:
        """Update the search distribution from rewards (higher is better).

        X is the population from ask(); scores has shape (popsize,).
        """
        ...

    def stop(self) -> dict[str, float]:
        """Termination criteria that fired, name -> value; empty if none."""
        ...

    def restart_at(self, mean: np.ndarray, sigma: float) -> None:
        """Continue the search from `mean` with step `sigma` (essa backtracks to its best validated
        point with it); what the strategy learned about the landscape may be kept."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Plain state: np.ndarray values or JSON-serializable scalars/dicts."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state from state_dict(); ValueError if incompatible."""
        ...

    @property
    def mean(self) -> np.ndarray: ...

    @property
    def sigma(self) -> float: ...

    @property
    def generation(self) -> int: ...

    @property
    def dim(self) -> int: ...

    @property
    def popsize(self) -> int: ...
