"""The initial step size, measured: how far a candidate must move before candidates differ.

The search samples z in units of each factor's RMS singular value (`SVDLoRA.step_scales`), but
how large a step changes behaviour depends on the task, the reward and the warm start: too small
and every candidate answers like the warm start (ties, or differences drowned in prompt noise);
too large and candidates lose what the warm start knows. So a run with `search.sigma: null`
(the default) measures it first:

1. One fixed calibration batch of B train prompts (its own seeded draw, not the search's).
2. The same λ standard-normal directions at each step size of `search.calibration_sigmas`, in
   ascending order, plus the warm start itself, all scored on that batch.
3. At each size, the between-candidate signal (`essa.stats`): snr = var(candidate effect) /
   noise variance of a candidate's mean reward at B prompts.
4. The chosen sigma is the smallest size whose snr reaches `search.calibration_snr`; larger sizes
   are not tried. If none reaches it, the size with the largest snr (the smaller on ties).

Each size costs one population's evaluation. The result is logged and saved in
RUN/calibration.json, which a resumed run reads instead of measuring again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from essa.stats import measure_signal

CALIBRATION_STREAM = 0xCA11B  # keeps the calibration batch apart from the search's own draws


@dataclass
class Calibration:
    sigma: float
    reason: str
    prompts: list[int]
    levels: list[dict] = field(default_factory=list)  # per size: sigma, snr, spread, rewards vs the start

    def as_dict(self) -> dict:
        return asdict(self)


def calibration_prompts(train_size: int, batch_size: int, seed: int) -> list[int]:
    rng = np.random.default_rng([seed, CALIBRATION_STREAM])
    return rng.permutation(train_size)[: min(batch_size, train_size)].tolist()


def calibrate_sigma(
    score: Callable[[np.ndarray], np.ndarray],
    dim: int,
    popsize: int,
    sigmas: list[float],
    target_snr: float,
    seed: int,
    prompts: list[int],
    report: Callable[[str], None] = print,
) -> Calibration:
    """`score(z)`: rewards (rows of z, prompts) of search points z (in step-scale units) on the
    calibration prompts; row 0 of the first call is the warm start (z = 0)."""
    directions = np.random.default_rng([seed, CALIBRATION_STREAM, 1]).standard_normal((popsize, dim))
    levels: list[dict] = []
    start_reward = None
    for sigma in sorted(sigmas):
        z = sigma * directions
        if start_reward is None:
            rewards = score(np.vstack([np.zeros((1, dim)), z]))
            start_reward, rewards = float(rewards[0].mean()), rewards[1:]
        else:
            rewards = score(z)
        signal = measure_signal(rewards)
        means = rewards.mean(axis=1)
        level = {"sigma": float(sigma), **signal.as_record(), "start_reward": round(start_reward, 6),
                 "reward_mean": round(float(means.mean()), 6), "reward_max": round(float(means.max()), 6)}
        levels.append(level)
        report(f"[essa] calibration: sigma {sigma:g}: snr {level['snr']}, candidates' mean reward "
               f"{level['reward_mean']:.3f} (max {level['reward_max']:.3f}, warm start {start_reward:.3f})")
        if signal.snr >= target_snr:
            return Calibration(float(sigma), f"smallest step with snr >= {target_snr:g}", prompts, levels)
    best = max(levels, key=lambda lv: (_snr(lv), -lv["sigma"]))
    return Calibration(best["sigma"], f"no step reached snr {target_snr:g}; the largest snr", prompts, levels)


def _snr(level: dict) -> float:
    return float("inf") if level["snr"] == "inf" else float(level["snr"])
