"""Antithetic evolution strategy with z-scored fitness: the update rule of ES at Scale.

CONVENTION: scores passed to ``tell`` are rewards, HIGHER IS BETTER.

The rule is the one that raised Countdown accuracy in "Evolution Strategies at Scale" (Qiu et
al., arXiv 2509.24372; OpenAI-ES, Salimans et al. 2017), applied in essa's own search space:

* ``ask()`` draws popsize / 2 standard-normal directions ε_k and returns the antithetic pairs
  m + σ ε_k and m − σ ε_k (candidate k and k + popsize / 2). Both halves of a pair are scored on
  the same prompts, and with greedy decoding a prompt whose answer the direction does not change
  scores alike in both, so it adds nothing to the estimate.
* ``tell()`` z-scores the rewards over the population, f = (r − mean r) / std r, and moves the
  mean by a fixed step along the estimated gradient,

      m ← m + lr · σ · (1 / popsize) · Σ_i f_i ε_i        (ε_i = ±ε_k for the two halves of pair k),

  which is ES at Scale's θ ← θ + α · (1/N) Σ R_n ε_n with α = lr · σ (they use α = σ / 2, i.e.
  ``lr = 0.5``). σ does not adapt.

Why a second strategy beside CMA-ES: CMA-ES moves its mean by the whole recombined step of the
best half, σ · y_w, whose norm is about σ·sqrt(n / μ_eff), mostly noise in the many directions
that no reward informs; probing steps large enough to change a greedy completion are then also
the steps the mean takes, and the mean walks away from the warm start (docs/results.md). Here
the probing size (σ) and the step of the mean (lr · σ times an average over the population) are
separate: noise in the steps adds up like a random walk (as the square root of the generations)
while a consistent gradient adds up linearly.

Ties: a generation in which every candidate scores the same carries no information and moves
nothing (counted in ``flat_generations``); a pair whose two halves tie contributes only through
the population's mean, which the z-scoring removes.

``ask()`` is idempotent until ``tell()``, and the state round-trips through ``state_dict()`` as
plain arrays and JSON values, so a resumed run asks exactly the population it would have asked.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class AntitheticES:
    """Antithetic ES maximizer with z-scored fitness and fixed lr and sigma. Implements ``Strategy``."""

    def __init__(
        self, dim: int, popsize: int, sigma0: float, seed: int, mean_lr: float = 0.5, mean0: np.ndarray | None = None
    ) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if int(popsize) % 2 or int(popsize) < 2:
            raise ValueError(f"the antithetic ES scores candidates in pairs: popsize must be even, got {popsize}")
        if not (math.isfinite(sigma0) and sigma0 > 0):
            raise ValueError(f"sigma0 must be a positive finite number, got {sigma0}")
        if not (math.isfinite(mean_lr) and mean_lr > 0):
            raise ValueError(f"mean_lr must be a positive finite number, got {mean_lr}")
        self._dim, self._popsize = int(dim), int(popsize)
        self.sigma0 = float(sigma0)
        self.seed = int(seed)
        self.mean_lr = float(mean_lr)
        self._mean = np.zeros(self._dim) if mean0 is None else np.array(mean0, dtype=np.float64).reshape(-1)
        if self._mean.shape != (self._dim,) or not np.all(np.isfinite(self._mean)):
            assert mean0 is not None  # np.zeros(dim) always passes this check
            raise ValueError(f"mean0 must be {self._dim} finite values, got shape {np.shape(mean0)}")
        self._sigma = self.sigma0
        self._generation = 0
        self._counteval = 0
        self._flat_generations = 0
        self._rng = np.random.default_rng(self.seed)
        self._pending: np.ndarray | None = None  # the directions ε_i of the asked population

    # -- read-only views -------------------------------------------------
    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def sigma(self) -> float:
        return float(self._sigma)

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def popsize(self) -> int:
        return self._popsize

    @property
    def flat_generations(self) -> int:
        """Generations told with every score equal: they left the mean unchanged."""
        return self._flat_generations

    def restart_at(self, mean: np.ndarray, sigma: float) -> None:
        """Continue from `mean` with step `sigma`; a pending population is dropped."""
        mean = np.array(mean, dtype=np.float64).reshape(-1)
        if mean.shape != (self._dim,) or not np.all(np.isfinite(mean)):
            raise ValueError(f"restart mean must be a finite vector of length {self._dim}")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"restart sigma must be positive and finite, got {sigma}")
        self._mean, self._sigma, self._pending = mean, float(sigma), None

    # -- ask / tell --------------------------------------------------------
    def ask(self) -> np.ndarray:
        """The antithetic pairs m ± σ ε_k, shape (popsize, dim); idempotent until tell()."""
        if self._pending is None:
            half = self._rng.standard_normal((self._popsize // 2, self._dim))
            self._pending = np.vstack([half, -half])
        return self._mean + self._sigma * self._pending

    def tell(self, X: np.ndarray, scores: np.ndarray) -> None:
        """Move the mean along the z-scored, antithetic gradient estimate of the rewards ``scores``.

        X must be the population from ask() (its directions are the ones kept, so a step is exact
        whatever rounding X went through). Raises RuntimeError without a pending ask(), ValueError on
        wrong shapes or non-finite values (state unchanged).
        """
        if self._pending is None:
            raise RuntimeError("tell() called without a pending population; call ask() first")
        X = np.asarray(X, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        if X.shape != (self._popsize, self._dim):
            raise ValueError(
                f"X has shape {X.shape}, expected {(self._popsize, self._dim)} (the population from ask())"
            )
        if scores.shape != (self._popsize,):
            raise ValueError(f"scores has shape {scores.shape}, expected {(self._popsize,)}")
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise ValueError(f"non-finite scores for candidates {bad.tolist()}: {scores[bad].tolist()}")
        self._counteval += self._popsize
        self._generation += 1
        spread = scores.std()
        if spread == 0.0:  # every candidate tied: no direction is told apart from another
            self._flat_generations += 1
        else:
            fitness = (scores - scores.mean()) / spread
            self._mean = self._mean + self.mean_lr * self._sigma * (fitness @ self._pending) / self._popsize
        self._pending = None

    def stop(self) -> dict[str, float]:
        """Never fires: σ is fixed and the run's length is the budget."""
        return {}

    # -- checkpointing -------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain state (copies); ``pending`` holds the asked directions, or None."""
        return {
            "kind": "antithetic_es",
            "dim": self._dim,
            "popsize": self._popsize,
            "sigma0": self.sigma0,
            "seed": self.seed,
            "mean_lr": self.mean_lr,
            "mean": self._mean.copy(),
            "sigma": float(self._sigma),
            "generation": self._generation,
            "counteval": self._counteval,
            "flat_generations": self._flat_generations,
            "rng_state": self._rng.bit_generator.state,
            "pending": None if self._pending is None else self._pending.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(); ValueError if it is not this strategy's or dim/popsize differ."""
        if state.get("kind") != "antithetic_es":
            raise ValueError("the checkpoint's strategy state is not an antithetic ES state (search.strategy changed?)")
        theirs, mine = (int(state["dim"]), int(state["popsize"])), (self._dim, self._popsize)
        if theirs != mine:
            raise ValueError(f"incompatible ES state: (dim, popsize) = {theirs}, this strategy has {mine}")
        mean = np.array(state["mean"], dtype=np.float64)
        if mean.shape != (self._dim,):
            raise ValueError(f"ES state 'mean' has shape {mean.shape}, expected {(self._dim,)}")
        pending = state.get("pending")
        if pending is not None:
            pending = np.array(pending, dtype=np.float64)
            if pending.shape != (self._popsize, self._dim):
                raise ValueError(f"ES state 'pending' has shape {pending.shape}, expected {(self._popsize, self._dim)}")
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng_state"]  # raises on a foreign generator
        self.sigma0, self.seed, self.mean_lr = float(state["sigma0"]), int(state["seed"]), float(state["mean_lr"])
        self._mean, self._sigma = mean, float(state["sigma"])
        self._generation, self._counteval = int(state["generation"]), int(state["counteval"])
        self._flat_generations = int(state.get("flat_generations", 0))
        self._rng, self._pending = rng, pending
