"""Search strategies: gradient-free maximizers with an ask/tell interface.

``make_strategy(name, dim, popsize, sigma0, seed)`` builds one by name:

* ``cma_full``: CMA-ES with a full covariance matrix.
* ``cma_sep``: separable (diagonal-covariance) CMA-ES.
* ``cma_auto``: ``cma_full`` for dim <= 200, ``cma_sep`` above. Full CMA
  learns C with O(n^2) parameters from ~popsize samples a generation (its
  learning rates shrink like 1/n^2), and each eigendecomposition costs
  O(n^3); in thousands of dimensions with ~100 evaluations a generation it
  would need far more generations than a run has before C is any better
  than the identity. The diagonal variant learns n parameters with rates
  ~1/n and costs O(n) per candidate.
* ``es``: antithetic pairs, z-scored fitness, a fixed step of the mean along the
  estimated gradient and a fixed σ (ES at Scale's rule; :mod:`.es`). Its
  probing size σ and the step of its mean are separate (``mean_lr``).

``candidate_fitness(rewards, mode)`` (:mod:`.fitness`) turns a generation's
(λ, B) per-prompt rewards into the λ scores told to a strategy.

All strategies maximize: scores told to them are rewards, higher is better.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import Strategy
from .cma import CMAES
from .es import AntitheticES
from .fitness import FITNESS_MODES, candidate_fitness

__all__ = [
    "AUTO_FULL_MAX_DIM",
    "AntitheticES",
    "CMAES",
    "FITNESS_MODES",
    "STRATEGIES",
    "Strategy",
    "candidate_fitness",
    "make_strategy",
]

# Largest dim for which cma_auto still picks the full-covariance variant.
AUTO_FULL_MAX_DIM = 200

StrategyFactory = Callable[..., Strategy]  # (dim, popsize, sigma0, seed, **options)


def _cma_auto(dim: int, popsize: int, sigma0: float, seed: int, **options) -> Strategy:
    variant = "full" if dim <= AUTO_FULL_MAX_DIM else "sep"
    return CMAES(dim, popsize, sigma0, seed, variant=variant, **options)


STRATEGIES: dict[str, StrategyFactory] = {
    "cma_full": lambda dim, popsize, sigma0, seed, **o: CMAES(dim, popsize, sigma0, seed, variant="full", **o),
    "cma_sep": lambda dim, popsize, sigma0, seed, **o: CMAES(dim, popsize, sigma0, seed, variant="sep", **o),
    "cma_auto": _cma_auto,
    # pairs are its sampling, so search.mirrored (CMA-ES's pairwise selection) does not apply
    "es": lambda dim, popsize, sigma0, seed, mirrored=False, **o: AntitheticES(dim, popsize, sigma0, seed, **o),
}


def make_strategy(name: str, dim: int, popsize: int, sigma0: float, seed: int, **options) -> Strategy:
    """Build the strategy registered as ``name`` (a key of STRATEGIES); `options` (e.g. mean_lr)
    go to its constructor."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown strategy {name!r}; known: {known}") from None
    return factory(dim, popsize, sigma0, seed, **options)
