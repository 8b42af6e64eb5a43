"""Statistics of rewards: the signal between candidates, and paired before/after intervals.

Signal. How much of the spread between candidates is signal: a two-way analysis of variance.

Every candidate i of a generation is scored on the same B prompts j (common random numbers), so
a reward r_ij = μ + a_i + b_j + e_ij splits into a candidate effect a_i, a prompt effect b_j
(how hard the prompt is, shared by all candidates and harmless to the ranking) and the
interaction e_ij: how a candidate's advantage changes from prompt to prompt. Only a_i carries
over to prompts the search never saw; e_ij is what ranking on B prompts gets wrong.

With the mean squares MS_cand = B·Σ(m_i − μ)²/(λ−1) and MS_err = Σ e_ij²/((λ−1)(B−1)),
F = MS_cand / MS_err is about 1 when candidates differ by chance alone. `snr` = max(0, F − 1)
estimates var(a_i) / (MS_err / B): the variance of the true candidate effects over the noise
variance of a candidate's mean reward. Below ~1 the ranking is mostly noise; a flat generation
(every reward equal) has snr 0.

Paired intervals. Two adapters scored on the same prompts differ by d_j per prompt; the mean
difference gets a Student-t 95% interval, mean ± t(0.975, n−1) · sd(d) / √n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Signal:
    spread: float  # standard deviation of the candidates' mean rewards
    snr: float  # max(0, F - 1); 0 when nothing differs; inf when candidates differ without noise
    f: float | None  # MS_cand / MS_err; None when it is undefined (B = 1, or nothing varies)

    def as_record(self) -> dict:
        return {"reward_spread": round(self.spread, 6), "snr": _round(self.snr)}


def measure_signal(rewards: np.ndarray) -> Signal:
    """`rewards`: (candidates, prompts), each candidate on the same prompts."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2:
        raise ValueError(f"need rewards of shape (candidates >= 2, prompts), got {r.shape}")
    lam, b = r.shape
    cand = r.mean(axis=1)
    spread = float(cand.std(ddof=1))
    ms_cand = b * float(np.sum((cand - cand.mean()) ** 2)) / (lam - 1)
    if b < 2 or ms_cand == 0.0:
        return Signal(spread, 0.0, None)
    resid = r - cand[:, None] - r.mean(axis=0)[None, :] + r.mean()
    ms_err = float(np.sum(resid**2)) / ((lam - 1) * (b - 1))
    if ms_err <= 1e-15 * ms_cand:  # candidates differ, identically on every prompt
        return Signal(spread, float("inf"), None)
    f = ms_cand / ms_err
    return Signal(spread, max(0.0, f - 1.0), f)


@dataclass(frozen=True)
class PairedDifference:
    before: float
    after: float
    diff: float  # after - before
    low: float  # 95% interval of the mean paired difference
    high: float
    n: int

    def as_record(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}

    def describe(self, percent: bool = False) -> str:
        f = (lambda v: f"{100 * v:+.1f} points") if percent else (lambda v: f"{v:+.4f}")
        g = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.4f}")
        verdict = "excludes 0" if self.low > 0 or self.high < 0 else "includes 0"
        return (
            f"{g(self.before)} -> {g(self.after)} on {self.n} prompts: difference {f(self.diff)}, "
            f"95% CI [{f(self.low)}, {f(self.high)}] ({verdict})"
        )


def paired_difference(before: np.ndarray, after: np.ndarray) -> PairedDifference:
    """Mean of after − before over the same prompts, with a 95% Student-t interval."""
    a, b = np.asarray(before, dtype=np.float64).ravel(), np.asarray(after, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two equal-length score lists of >= 2 prompts, got {a.size} and {b.size}")
    d = b - a
    half = t_975(a.size - 1) * float(d.std(ddof=1)) / np.sqrt(a.size)
    mean = float(d.mean())
    return PairedDifference(float(a.mean()), float(b.mean()), mean, mean - half, mean + half, int(a.size))


_T_975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)  # df 1..30, the standard table


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t: the table to df 30, the Cornish-Fisher series beyond."""
    if df < 1:
        raise ValueError("t needs df >= 1")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = 1.959964
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def _round(value: float) -> float | str:
    return "inf" if value == float("inf") else round(value, 4)
