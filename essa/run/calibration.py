"""The initial step size, measured: how far a candidate must move before candidates differ.

The search samples z in units of each factor's RMS singular value (`SVDLoRA.step_scales`), but
how large a step changes behaviour depends on the task, the reward and the warm start: too small
and every candidate answers like the warm start (ties, or differences drowned in prompt noise);
too large and candidates lose what the warm start knows. So a run with `search.sigma: null`
(the default) measures it first:

1. Two fixed batches of B train prompts each (their own seeded draw, not the search's): one to
   screen the sizes, one to confirm the size the screen picks.
2. The same λ standard-normal directions at each step size of `search.calibration_sigmas`, in
   ascending order, plus the warm start itself, all scored on the screening batch.
3. At each size, the between-candidate signal (`essa.stats`): snr = var(candidate effect) /
   noise variance of a candidate's mean reward at B prompts.
4. A size is *harmful* when the candidates' mean reward falls below the warm start's by more
   than 10% of |warm start| or two standard errors of that mean, whichever is larger: its spread
   then comes from candidates that lost what the warm start knew, not from useful variation.
   Measured (2026-12-01, grounded reward, principal start, λ 8, B 8): at σ = 4 the mean fell
   0.56 → 0.16 while snr was the largest of the five sizes, and a search started there never
   recovered (validation 0.55 → 0.12).
5. The first harmless size whose snr reaches `search.calibration_snr` is confirmed: the same
   candidates are scored on the second batch, and their snr there must reach the target too (an
   independent replication; pooling both batches would still let a fluke of the first carry half
   the weight). One batch of 8 prompts is easily fooled: measured (2026-12-02, seed 2 of the GRPO
   comparison) a screen showed snr 2.67 at σ = 0.25, and the search then had snr 0 in 20 of 47
   generations and gained 0.02. A size that is not confirmed counts as not reaching the target,
   and the screen goes on to the next size.
   With ``refuse_harmful=False`` (the antithetic ES, ``search.strategy=es``) harm is not judged
   (every level's ``harmful`` is false) and refuses nothing: that strategy's mean never moves to a
   candidate but along the difference of each antithetic pair, in which the damage a step does
   alike in both directions cancels; the candidates' mean reward beside the warm start's is still
   in each level.
6. The chosen sigma is the smallest harmless size so confirmed. Sizes above the first harmful
   one are not tried, nor above the chosen one. If no harmless size is confirmed, the harmless
   size with the largest snr (the smaller of its two where it was confirmed; the smaller size on ties); if even
   the smallest is harmful, the smallest.

Each size costs one population's evaluation, a confirmation one more. The result is logged and saved in
RUN/calibration.json, which a resumed run reads instead of measuring again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from essa.stats import measure_signal

CALIBRATION_STREAM = 0xCA11B  # keeps the calibration batch apart from the search's own draws


@dataclass
class Calibration:
    sigma: float
    reason: str
    prompts: list[int]  # the screening batch
    levels: list[dict] = field(default_factory=list)  # per size: sigma, snr, spread, rewards vs the start
    confirm_prompts: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def calibration_prompts(train_size: int, batch_size: int, seed: int) -> tuple[list[int], list[int]]:
    """(screening batch, confirmation batch): distinct train prompts while the split has enough; a
    split smaller than 2B confirms on a reshuffle of the same prompts, which still re-measures the
    candidates' spread but cannot rule out a prompt-specific fluke."""
    order = np.random.default_rng([seed, CALIBRATION_STREAM]).permutation(train_size)
    b = min(batch_size, train_size)
    screen = order[:b].tolist()
    confirm = order[b : 2 * b].tolist()
    if len(confirm) < b:
        confirm = np.random.default_rng([seed, CALIBRATION_STREAM, 2]).permutation(train_size)[:b].tolist()
    return screen, confirm


def calibrate_sigma(
    score: Callable[[np.ndarray, list[int]], np.ndarray],
    dim: int,
    popsize: int,
    sigmas: list[float],
    target_snr: float,
    seed: int,
    prompts: list[int],
    confirm_prompts: list[int] | None = None,
    report: Callable[[str], None] = print,
    refuse_harmful: bool = True,
) -> Calibration:
    """`score(z, prompts)`: rewards (rows of z, prompts) of search points z (in step-scale units) on
    those train prompts; row 0 of the first call is the warm start (z = 0). Without
    `confirm_prompts` a screened size is taken unconfirmed."""
    directions = np.random.default_rng([seed, CALIBRATION_STREAM, 1]).standard_normal((popsize, dim))
    levels: list[dict] = []
    start_reward = None
    confirm = list(confirm_prompts or [])
    for sigma in sorted(sigmas):
        z = sigma * directions
        if start_reward is None:
            rewards = score(np.vstack([np.zeros((1, dim)), z]), prompts)
            start_reward, rewards = float(rewards[0].mean()), rewards[1:]
        else:
            rewards = score(z, prompts)
        signal = measure_signal(rewards)
        means = rewards.mean(axis=1)
        harmful = refuse_harmful and bool(
            means.mean() < start_reward - max(0.1 * abs(start_reward), 2 * means.std(ddof=1) / np.sqrt(len(means)))
        )
        level = {
            "sigma": float(sigma),
            **signal.as_record(),
            "start_reward": round(start_reward, 6),
            "reward_mean": round(float(means.mean()), 6),
            "reward_max": round(float(means.max()), 6),
            "harmful": harmful,
        }
        levels.append(level)
        report(
            f"[essa] calibration: sigma {sigma:g}: snr {level['snr']}, candidates' mean reward "
            f"{level['reward_mean']:.3f} (max {level['reward_max']:.3f}, warm start {start_reward:.3f})"
            + (": harmful" if harmful else "")
        )
        if harmful:
            break
        if signal.snr < target_snr:
            continue
        if not confirm:
            return Calibration(float(sigma), f"smallest step with snr >= {target_snr:g} (unconfirmed)", prompts, levels)
        confirmed = measure_signal(score(z, confirm))
        level["confirmed_snr"] = confirmed.as_record()["snr"]
        report(
            f"[essa] calibration: sigma {sigma:g} on a second batch: snr {level['confirmed_snr']}"
            + ("" if confirmed.snr >= target_snr else ": not confirmed")
        )
        if confirmed.snr >= target_snr:
            return Calibration(
                float(sigma),
                f"smallest step with snr >= {target_snr:g}, confirmed on a second batch",
                prompts,
                levels,
                confirm,
            )
    safe = [lv for lv in levels if not lv["harmful"]]
    if not safe:
        return Calibration(levels[0]["sigma"], "every step tried was harmful; the smallest", prompts, levels, confirm)
    best = max(safe, key=lambda lv: (min(_snr(lv["snr"]), _snr(lv.get("confirmed_snr", lv["snr"]))), -lv["sigma"]))
    return Calibration(
        best["sigma"], f"no harmless step reached snr {target_snr:g}; the largest snr", prompts, levels, confirm
    )


def _snr(value) -> float:
    return float("inf") if value == "inf" else float(value)
