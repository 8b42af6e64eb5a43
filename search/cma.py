"""Ask/tell CMA-ES in numpy with plain-array state, after pycma's purecma.

CONVENTION: scores passed to ``tell`` are rewards, HIGHER IS BETTER. The
strategy maximizes; to minimize f, tell ``-f``.

How: static parameters (recombination weights, mu_eff, learning rates,
damping, E||N(0,I)||, eigendecomposition interval) are computed once in the
frozen :class:`CMAParams`; the moving state (mean, sigma, evolution paths,
covariance, its eigenbasis, counters, RNG) lives in plain attributes of
:class:`CMAES` and round-trips through ``state_dict`` as numpy arrays and
JSON-serializable values, so checkpoints need neither pickle nor this class.

Variants:

* ``"full"``: full covariance C = B diag(D^2) B^T (Hansen's tutorial update,
  positive weights on the best mu = popsize // 2). The O(n^3)
  eigendecomposition is lazy, redone every
  max(1, floor(1 / (10 n (c1 + cmu)))) generations as in purecma: C changes
  by only ~(c1 + cmu) per generation, so a stale basis costs little.
* ``"sep"``: separable CMA-ES (Ros & Hansen 2008): C is diagonal, which makes
  every step O(n) per candidate; c1 and cmu are multiplied by (n + 2) / 3
  because only n parameters are learned instead of n (n + 1) / 2.

Mean learning rate. ``mean_lr`` = c_m < 1 moves the mean by c_m·σ·y_w
(Hansen's tutorial, eq. 9; pycma's ``CMA_cmean``) while the evolution paths
still see y_w. In thousands of dimensions with a few candidates, y_w is mostly
noise (its norm is about σ·sqrt(n / mu_eff), against a selected part that
grows with the signal only), so c_m < 1 slows the random drift of the mean away
from the warm start.

Ties. Rewards on a few prompts tie often (0/1 rewards: most candidates may
solve the same prompts). Tied candidates share the mean of the weights of the
ranks they span (`rank_weights`), so the update never depends on candidate
order, and a generation in which every candidate ties moves nothing: mean,
paths, covariance and sigma stay put (counted in ``flat_generations``). Unlike
pycma's flat-fitness rule, sigma is not raised there: on a sparse reward all
ties usually mean the task is too hard at this batch, and larger steps would
damage the warm start; essa's step-size calibration (essa/run/calibration.py)
sets sigma where candidates do differ.

Mirrored sampling (``mirrored=True``; Brockhoff, Auger, Hansen et al., "Mirrored sampling and
sequential selection for evolution strategies", PPSN 2010). ask() draws popsize / 2 steps s and
returns m + σs and m − σs (candidate j and j + popsize / 2 are a pair). Both halves of a pair
are scored on the same prompts, so whatever the step does not change cancels in their
difference: tell() keeps the better of each pair (pairwise selection) and recombines those
winners as a population of popsize / 2 (weights, learning rates and damping are those of
popsize / 2). A winner's step is ±s with the sign chosen by the reward, so under random selection
it is still N(0, C): CSA stays unbiased, which plain weighted recombination of mirrored pairs is
not (a pair both selected cancels and shrinks σ). A pair that ties carries no information and
is left out; a generation in which every pair ties is flat.

``ask()`` is idempotent until ``tell()``: a second call returns the already
sampled population (copy), so a driver resumed from a checkpoint taken
between ask and tell evaluates exactly the same candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

VARIANTS = ("full", "sep")
TOLX = 1e-12  # sigma * max(sqrt(diag C)) below this: no more resolution
MAX_CONDITION = 1e14  # cond(C) above this: float64 sampling degenerates


@dataclass(frozen=True, eq=False)
class CMAParams:
    """Static strategy parameters; a function of (dim, popsize, variant)."""

    dim: int
    popsize: int
    mu: int
    weights: np.ndarray  # (mu,), positive, sums to 1
    mueff: float
    cc: float
    cs: float
    damps: float
    c1: float
    cmu: float
    chiN: float
    eigen_interval: int  # generations between eigendecompositions

    @classmethod
    def create(cls, dim: int, popsize: int, variant: str) -> CMAParams:
        n = dim
        mu = popsize // 2
        w = math.log((popsize + 1) / 2) - np.log(np.arange(1, mu + 1))
        w = w / w.sum()
        w.setflags(write=False)
        mueff = float(1.0 / np.sum(w**2))
        cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
        cs = (mueff + 2) / (n + mueff + 5)
        damps = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + cs
        c1 = 2 / ((n + 1.3) ** 2 + mueff)
        cmu = 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff)
        if variant == "sep":
            c1 *= (n + 2) / 3
            cmu *= (n + 2) / 3
        cmu = min(1 - c1, cmu)
        if variant == "full":
            interval = max(1, math.floor(1 / (10 * n * (c1 + cmu))))
        else:
            interval = 1  # diagonal: D = sqrt(diag C) is free to refresh
        chiN = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
        return cls(n, popsize, mu, w, mueff, cc, cs, damps, c1, cmu, chiN, interval)


def rank_weights(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-candidate recombination weights: `weights[k]` for the k-th best (0 past the mu best; with
    fewer candidates than weights, the first ones, renormalized),
    averaged over each group of tied scores. They sum to 1 and do not depend on candidate order."""
    lam = len(scores)
    if lam < len(weights):  # fewer candidates than weights (mirrored: the pairs that did not tie)
        weights = weights[:lam] / weights[:lam].sum()
    by_rank = np.zeros(lam)
    by_rank[: len(weights)] = weights
    order = np.argsort(-scores, kind="stable")
    w = np.empty(lam)
    start = 0
    while start < lam:  # runs of equal scores in rank order
        end = start + 1
        while end < lam and scores[order[end]] == scores[order[start]]:
            end += 1
        w[order[start:end]] = by_rank[start:end].mean()
        start = end
    return w


def pair_winners(X: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The better candidate of each mirrored pair (j, j + len/2) and its score; tied pairs left out."""
    half = len(scores) // 2
    first, second = scores[:half], scores[half:]
    keep = first != second
    take_first = first > second
    winners = np.where(take_first[:, None], X[:half], X[half:])[keep]
    return winners, np.maximum(first, second)[keep]


class CMAES:
    """CMA-ES maximizer (see module docstring). Implements ``Strategy``."""

    def __init__(
        self,
        dim: int,
        popsize: int,
        sigma0: float,
        seed: int,
        variant: str = "full",
        mean0: np.ndarray | None = None,
        mean_lr: float = 1.0,
        mirrored: bool = False,
    ) -> None:
        if not 0 < mean_lr <= 1:
            raise ValueError(f"mean_lr must be in (0, 1], got {mean_lr}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown CMA-ES variant {variant!r}; known: {', '.join(VARIANTS)}")
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if int(popsize) < 2:
            raise ValueError(f"popsize must be >= 2, got {popsize}")
        if mirrored and (int(popsize) % 2 or int(popsize) < 4):
            raise ValueError(f"mirrored sampling needs an even popsize of at least 4, got {popsize}")
        if not (math.isfinite(sigma0) and sigma0 > 0):
            raise ValueError(f"sigma0 must be a positive finite number, got {sigma0}")
        self.variant = variant
        self.mean_lr = float(mean_lr)  # c_m: the mean moves c_m * sigma * y_w (paths still use y_w)
        self.mirrored = bool(mirrored)
        # mirrored: the update sees one winner per pair, a population of popsize / 2
        self.params = CMAParams.create(int(dim), int(popsize) // (2 if self.mirrored else 1), variant)
        self._popsize = int(popsize)
        self.sigma0 = float(sigma0)
        self.seed = int(seed)
        n = self.params.dim
        if mean0 is None:
            self._mean = np.zeros(n)
        else:
            self._mean = np.array(mean0, dtype=np.float64).reshape(-1)
            if self._mean.shape != (n,) or not np.all(np.isfinite(self._mean)):
                raise ValueError(f"mean0 must be {n} finite values, got shape {np.shape(mean0)}")
        self._sigma = self.sigma0
        self._ps = np.zeros(n)
        self._pc = np.zeros(n)
        # full: C is (n, n) and B its eigenvectors; sep: C is diag(C), B unused.
        self._C = np.eye(n) if variant == "full" else np.ones(n)
        self._B: np.ndarray | None = np.eye(n) if variant == "full" else None
        self._D = np.ones(n)  # sqrt of the eigenvalues of C
        self._counteval = 0
        self._generation = 0
        self._eigen_generation = 0  # generation of the last decomposition
        self._flat_generations = 0  # generations whose candidates all tied (no update)
        self._rng = np.random.default_rng(self.seed)
        self._pending: np.ndarray | None = None

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
        return self.params.dim

    @property
    def popsize(self) -> int:
        return self._popsize

    @property
    def counteval(self) -> int:
        return self._counteval

    @property
    def flat_generations(self) -> int:
        """Generations told with every score equal: they left the distribution unchanged."""
        return self._flat_generations

    def restart_at(self, mean: np.ndarray, sigma: float) -> None:
        """Continue from `mean` with step `sigma`: the evolution paths restart at zero, the covariance
        is kept, a pending population is dropped (the next ask() samples around `mean`)."""
        mean = np.array(mean, dtype=np.float64).reshape(-1)
        if mean.shape != (self.dim,) or not np.all(np.isfinite(mean)):
            raise ValueError(f"restart mean must be a finite vector of length {self.dim}")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"restart sigma must be positive and finite, got {sigma}")
        self._mean, self._sigma = mean, float(sigma)
        self._ps = np.zeros(self.dim)
        self._pc = np.zeros(self.dim)
        self._pending = None

    # -- ask / tell --------------------------------------------------------
    def ask(self) -> np.ndarray:
        """Sample popsize candidates from N(mean, sigma^2 C); idempotent until tell()."""
        if self._pending is None:
            z = self._rng.standard_normal((self.popsize // 2 if self.mirrored else self.popsize, self.dim))
            if self.mirrored:
                z = np.vstack([z, -z])
            if self._B is None:
                steps = z * self._D
            else:
                steps = (z * self._D) @ self._B.T  # one GEMM for the whole population
            self._pending = self._mean + self._sigma * steps
        return self._pending.copy()

    def tell(self, X: np.ndarray, scores: np.ndarray) -> None:
        """Update from rewards ``scores`` (HIGHER IS BETTER) of population ``X``.

        X must have the shape of ask()'s population and normally is it; the
        update uses X as given. Raises RuntimeError without a pending ask(),
        ValueError on wrong shapes or non-finite values (state unchanged).
        """
        if self._pending is None:
            raise RuntimeError("tell() called without a pending population; call ask() first")
        p, lam = self.params, self.popsize
        X = np.asarray(X, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        if X.shape != (lam, p.dim):
            raise ValueError(f"X has shape {X.shape}, expected {(lam, p.dim)} (the population from ask())")
        if scores.shape != (lam,):
            raise ValueError(f"scores has shape {scores.shape}, expected {(lam,)}")
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise ValueError(f"non-finite scores for candidates {bad.tolist()}: {scores[bad].tolist()}")
        bad = np.flatnonzero(~np.all(np.isfinite(X), axis=1))
        if bad.size:
            raise ValueError(f"non-finite values in candidates {bad.tolist()} of X")

        self._counteval += lam
        self._generation += 1
        if self.mirrored:
            X, scores = pair_winners(X, scores)
        # Mirrored: winners that score alike still each won a comparison, so only no winner is flat.
        if len(scores) == 0 or (not self.mirrored and np.ptp(scores) == 0.0):
            # A flat generation (every candidate scored the same) says nothing about any
            # direction: the distribution stays as it is, and a fresh population is drawn.
            self._flat_generations += 1
            self._pending = None
            return
        # Recombination weights by rank; tied candidates share the mean weight of the ranks
        # they span, so ties never rank by candidate index (which would be a random step).
        w = rank_weights(scores, p.weights)
        old_mean = self._mean
        Y = (X - old_mean) / self._sigma  # every candidate's step in sigma units
        y_w = w @ Y
        self._mean = old_mean + self.mean_lr * self._sigma * y_w
        # Shared weights are flatter than p.weights; normalizing the paths with their own mu_eff
        # keeps p_sigma unbiased under random selection, so ties do not shrink sigma by themselves.
        mueff = float(1.0 / np.sum(w**2))

        # Cumulative step-size adaptation: path of C^{-1/2}-whitened steps,
        # whitened with the basis that generated them (possibly stale).
        if self._B is None:
            z_w = y_w / self._D
        else:
            z_w = self._B @ ((self._B.T @ y_w) / self._D)
        self._ps = (1 - p.cs) * self._ps + math.sqrt(p.cs * (2 - p.cs) * mueff) * z_w
        ps_norm = float(np.linalg.norm(self._ps))
        # hsig stalls p_c while p_sigma is still long (early, or sigma just
        # grew a lot), so a too-small sigma does not inflate C along p_c.
        ps_unbiased = ps_norm / math.sqrt(1 - (1 - p.cs) ** (2 * self._generation))
        hsig = float(ps_unbiased / p.chiN < 1.4 + 2 / (p.dim + 1))
        self._pc = (1 - p.cc) * self._pc + hsig * math.sqrt(p.cc * (2 - p.cc) * mueff) * y_w

        c1a = p.c1 * (1 - (1 - hsig) * p.cc * (2 - p.cc))
        decay = 1 - c1a - p.cmu  # weights sum to 1
        if self._B is None:
            self._C = decay * self._C + p.c1 * self._pc**2 + p.cmu * (w @ Y**2)
            self._D = np.sqrt(self._C)
        else:
            # Rank-one and rank-mu updates as a single GEMM M^T M: one (n, n)
            # temporary, which matters at n ~ 2000 (32 MB per matrix).
            M = np.vstack([math.sqrt(p.c1) * self._pc, np.sqrt(p.cmu * w)[:, None] * Y])
            self._C *= decay
            self._C += M.T @ M
            if self._generation - self._eigen_generation >= p.eigen_interval:
                self._decompose()

        self._sigma *= math.exp(min(1.0, (p.cs / p.damps) * (ps_norm / p.chiN - 1)))
        self._pending = None

    def _decompose(self) -> None:
        C = np.triu(self._C) + np.triu(self._C, 1).T  # exact symmetry
        evals, B = np.linalg.eigh(C)
        # Positive weights keep C positive definite in exact arithmetic; clip
        # round-off so D stays invertible.
        evals = np.maximum(evals, max(float(evals.max()), 1e-300) * 1e-20)
        self._C, self._B, self._D = C, B, np.sqrt(evals)
        self._eigen_generation = self._generation

    def stop(self) -> dict[str, float]:
        """Fired termination criteria with their measured values; {} if none.

        ``tolx``: sigma * max(sqrt(diag C)) < 1e-12 (largest coordinate std).
        ``conditioncov``: condition number of C (from the last
        eigendecomposition for "full") > 1e14.
        """
        fired: dict[str, float] = {}
        diag = self._C if self._B is None else np.diag(self._C)
        tolx = self._sigma * math.sqrt(float(diag.max()))
        if tolx < TOLX:
            fired["tolx"] = tolx
        cond = float(self._D.max() ** 2 / self._D.min() ** 2)
        if cond > MAX_CONDITION:
            fired["conditioncov"] = cond
        return fired

    # -- checkpointing -------------------------------------------------------
    _ARRAYS = ("mean", "p_sigma", "p_c", "C", "D")

    def state_dict(self) -> dict[str, Any]:
        """Plain state (copies): np.ndarray values or JSON-serializable ones.

        ``pending`` is the population sampled by ask() and not yet told
        (array), or None. ``B`` is present for the "full" variant only.
        """
        state: dict[str, Any] = {
            "variant": self.variant,
            "dim": self.dim,
            "popsize": self.popsize,
            "sigma0": self.sigma0,
            "seed": self.seed,
            "mean_lr": self.mean_lr,
            "mirrored": self.mirrored,
            "mean": self._mean.copy(),
            "sigma": float(self._sigma),
            "p_sigma": self._ps.copy(),
            "p_c": self._pc.copy(),
            "C": self._C.copy(),
            "D": self._D.copy(),
            "counteval": self._counteval,
            "generation": self._generation,
            "eigen_generation": self._eigen_generation,
            "flat_generations": self._flat_generations,
            "rng_state": self._rng.bit_generator.state,  # plain dict, big ints
            "pending": None if self._pending is None else self._pending.copy(),
        }
        if self._B is not None:
            state["B"] = self._B.copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(); ValueError if variant/dim/popsize differ."""
        for key in ("variant", "dim", "popsize"):
            if key not in state:
                raise ValueError(f"CMA-ES state has no {key!r}; not a CMAES.state_dict()")
        mine = (self.variant, self.dim, self.popsize, self.mirrored)
        theirs = (str(state["variant"]), int(state["dim"]), int(state["popsize"]), bool(state.get("mirrored", False)))
        if mine != theirs:
            raise ValueError(
                f"incompatible CMA-ES state: (variant, dim, popsize, mirrored) = {theirs}, this strategy has {mine}"
            )
        needed = {*self._ARRAYS, "sigma", "counteval", "generation", "eigen_generation", "rng_state"}
        if self._B is not None:
            needed.add("B")
        missing = sorted(needed - set(state))
        if missing:
            raise ValueError(f"CMA-ES state is missing {missing}")
        n, lam = self.dim, self.popsize
        c_shape = (n, n) if self._B is not None else (n,)
        shapes = {"mean": (n,), "p_sigma": (n,), "p_c": (n,), "C": c_shape, "D": (n,), "B": (n, n)}
        arrays: dict[str, np.ndarray] = {}
        for key, shape in shapes.items():
            if key == "B" and self._B is None:
                continue
            arr = np.array(state[key], dtype=np.float64)  # copy, detached from caller
            if arr.shape != shape:
                raise ValueError(f"CMA-ES state {key!r} has shape {arr.shape}, expected {shape}")
            arrays[key] = arr
        pending = state.get("pending")
        if pending is not None:
            pending = np.array(pending, dtype=np.float64)
            if pending.shape != (lam, n):
                raise ValueError(f"CMA-ES state 'pending' has shape {pending.shape}, expected {(lam, n)}")
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng_state"]  # raises on a foreign generator

        self.sigma0 = float(state.get("sigma0", self.sigma0))
        self.seed = int(state.get("seed", self.seed))
        self._mean, self._ps, self._pc = arrays["mean"], arrays["p_sigma"], arrays["p_c"]
        self._C, self._D = arrays["C"], arrays["D"]
        self._B = arrays.get("B")
        self._sigma = float(state["sigma"])
        self._counteval = int(state["counteval"])
        self._generation = int(state["generation"])
        self._eigen_generation = int(state["eigen_generation"])
        self._flat_generations = int(state.get("flat_generations", 0))  # absent in older checkpoints
        self._rng = rng
        self._pending = pending
