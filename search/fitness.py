"""Fitness shaping: from a generation's per-prompt rewards to one fitness per candidate.

Every candidate of a generation is scored on the same B prompts, so the rewards form a (λ, B)
matrix. Two ways to turn it into the λ numbers a strategy ranks or weights (``search.fitness``):

* ``mean``: each candidate's mean reward over the prompts (what the reward says, unchanged).
* ``prompt_zscore``: each prompt's rewards are centred and divided by their standard deviation
  over the candidates, then averaged per candidate. A prompt on which every candidate scores the
  same (all solve it, or none) adds nothing; on a prompt that only a few candidates solve, those
  few gain more than a prompt that half of them solve gives anyone (GRPO normalises advantages in
  each prompt's group the same way; EGGROLL centres fitness per prompt). With 0/1 rewards at a low
  solve rate this puts the weight on the prompts at the edge of what the model can do.

Centring per prompt alone is not offered: it subtracts the same number from every candidate's
mean (the prompts' mean reward), which changes neither a ranking nor a z-score.
"""

from __future__ import annotations

import numpy as np

FITNESS_MODES = ("mean", "prompt_zscore")


def candidate_fitness(rewards: np.ndarray, mode: str = "mean") -> np.ndarray:
    """(λ,) fitness of each candidate from `rewards` (λ candidates × B prompts); higher is better."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must be (candidates, prompts), got shape {r.shape}")
    if mode == "mean":
        return r.mean(axis=1)
    if mode == "prompt_zscore":
        spread = r.std(axis=0)
        centred = r - r.mean(axis=0)
        z = np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0)
        return z.mean(axis=1)
    raise ValueError(f"unknown fitness mode {mode!r}; known: {', '.join(FITNESS_MODES)}")
