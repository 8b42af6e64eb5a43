"""The between-candidate signal figure: zero for pure noise, large for real candidate effects."""

from __future__ import annotations

import numpy as np
import pytest

from essa.stats import measure_signal


def test_flat_rewards_have_no_signal():
    s = measure_signal(np.zeros((8, 16)))
    assert s.snr == 0.0 and s.spread == 0.0 and s.f is None


def test_prompt_difficulty_alone_is_not_signal():
    """Every candidate solves the same prompts: the prompts differ, the candidates do not."""
    row = (np.arange(16) % 3 == 0).astype(float)
    assert measure_signal(np.tile(row, (8, 1))).snr == 0.0


def test_pure_noise_gives_f_near_one():
    rng = np.random.default_rng(0)
    fs = [measure_signal(rng.random((16, 32))).f for _ in range(200)]
    assert np.mean(fs) == pytest.approx(1.0, abs=0.05)


def test_candidate_effects_are_recovered():
    """var(a) / (noise var / B) = 0.01 / (0.04 / 32) = 8."""
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.1, size=(64, 1))
    b = rng.normal(0, 0.3, size=(1, 32))
    snr = measure_signal(a + b + rng.normal(0, 0.2, size=(64, 32))).snr
    assert 0.01 / (0.04 / 32) * 0.6 < snr < 0.01 / (0.04 / 32) * 1.5


def test_noiseless_differences_are_infinite_signal():
    r = np.array([[0.0, 0.0], [1.0, 1.0]])
    s = measure_signal(r)
    assert s.snr == float("inf") and s.as_record()["snr"] == "inf"


def test_one_prompt_has_no_noise_estimate():
    s = measure_signal(np.array([[0.0], [1.0], [1.0]]))
    assert s.f is None and s.snr == 0.0 and s.spread > 0


def test_one_candidate_is_refused():
    with pytest.raises(ValueError, match="candidates >= 2"):
        measure_signal(np.ones((1, 4)))


@pytest.mark.parametrize(
    "df, expected", [(1, 12.706), (2, 4.303), (3, 3.182), (9, 2.262), (30, 2.042), (99, 1.984), (10**6, 1.960)]
)
def test_t_quantiles_match_the_tables(df, expected):
    from essa.stats import t_975

    assert t_975(df) == pytest.approx(expected, abs=2e-3)


def test_paired_difference_interval_and_verdict():
    from essa.stats import paired_difference

    before = np.array([0, 0, 1, 0, 1, 0, 0, 1, 0, 0] * 10, dtype=float)
    after = before.copy()
    after[np.flatnonzero(before == 0)[:10]] = 1  # ten prompts gained
    p = paired_difference(before, after)
    assert p.diff == pytest.approx(0.1) and p.n == 100 and p.low > 0 and "excludes 0" in p.describe(percent=True)
    same = paired_difference(before, before[::-1])
    assert same.low < 0 < same.high and "includes 0" in same.describe()
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference(before, after[:5])


def test_t_quantiles_agree_with_scipy_for_every_df():
    """scipy (a dev dependency, test oracle only) against the table and the Cornish-Fisher series,
    for every df a paired interval over up to 2,000 prompts can have, and beyond."""
    scipy_stats = pytest.importorskip("scipy.stats")
    from essa.stats import t_975

    for df in [*range(1, 2001), 10**4, 10**6]:
        exact = float(scipy_stats.t.ppf(0.975, df))
        # the table is printed to 3 decimals; the series is far closer than that past df 30
        assert t_975(df) == pytest.approx(exact, abs=5e-4 if df <= 30 else 1e-5), df
