"""Step-size calibration with a synthetic scorer whose signal grows with the step."""

from __future__ import annotations

import numpy as np
import pytest

from essa.calibration import calibrate_sigma, calibration_prompts

B = 16


def scorer(gain: float, calls: list):
    """Rewards: a candidate effect proportional to |z| along one axis, plus fixed prompt noise."""
    noise = np.random.default_rng(5).normal(0, 0.1, size=(64, B))

    def score(z: np.ndarray) -> np.ndarray:
        calls.append(z.copy())
        effect = gain * z[:, :1]  # (rows, 1)
        return 0.5 + effect + noise[: len(z)]

    return score


def test_stops_at_the_smallest_step_with_enough_signal():
    calls = []
    cal = calibrate_sigma(scorer(0.02, calls), dim=6, popsize=16, sigmas=[2.0, 0.25, 1.0, 0.5, 4.0],
                          target_snr=1.0, seed=0, prompts=list(range(B)), report=lambda _: None)
    tried = [lv["sigma"] for lv in cal.levels]
    assert tried == sorted(tried) and tried[-1] == cal.sigma  # ascending, stopped at the pick
    assert all(float(lv["snr"]) < 1.0 for lv in cal.levels[:-1]) and float(cal.levels[-1]["snr"]) >= 1.0
    assert 0.25 < cal.sigma < 4.0
    assert len(calls) == len(tried) and len(calls[0]) == 17 and not calls[0][0].any()  # row 0: the warm start
    # the same directions at every size: only the scale differs
    np.testing.assert_allclose(calls[1] / tried[1], calls[0][1:] / tried[0])


def test_without_enough_signal_it_takes_the_largest_snr():
    cal = calibrate_sigma(lambda z: np.zeros((len(z), B)), dim=3, popsize=4, sigmas=[0.5, 1.0, 2.0],
                          target_snr=1.0, seed=0, prompts=list(range(B)), report=lambda _: None)
    assert len(cal.levels) == 3 and cal.sigma == 0.5  # all flat: snr 0 everywhere, the smaller step
    assert "no harmless step reached" in cal.reason


def test_same_seed_same_result_and_the_record_is_json():
    import json

    runs = [calibrate_sigma(scorer(0.05, []), 6, 8, [0.5, 1, 2, 4], 1.0, 3, [1, 2], report=lambda _: None)
            for _ in range(2)]
    assert runs[0].as_dict() == runs[1].as_dict()
    json.dumps(runs[0].as_dict())


@pytest.mark.parametrize("size, batch", [(100, 8), (5, 8)])
def test_calibration_prompts_are_fixed_distinct_and_in_range(size, batch):
    a, b = calibration_prompts(size, batch, 0), calibration_prompts(size, batch, 0)
    assert a == b and len(set(a)) == len(a) == min(size, batch) and all(0 <= i < size for i in a)
    assert calibration_prompts(size, batch, 1) != a or size <= 1


def test_a_step_that_wrecks_the_warm_start_is_not_chosen():
    """Large steps: a wide spread (high snr) from candidates that lost most of their reward."""
    noise = np.random.default_rng(2).normal(0, 0.05, size=(64, B))

    def score(z):
        size = np.abs(z).mean(axis=1, keepdims=True)  # ~0.8 sigma
        damage = np.where(size > 2.0, 0.4 * size * np.abs(z[:, 1:2]), 0.0)
        return 0.6 + 0.004 * z[:, :1] - damage + noise[: len(z)]

    cal = calibrate_sigma(score, dim=6, popsize=16, sigmas=[0.5, 1.0, 4.0, 8.0], target_snr=1.0, seed=0,
                          prompts=list(range(B)), report=lambda _: None)
    assert cal.levels[-1]["sigma"] == 4.0 and cal.levels[-1]["harmful"]  # tried, found harmful, stopped there
    assert float(cal.levels[-1]["snr"]) > max(float(lv["snr"]) for lv in cal.levels[:-1])
    assert cal.sigma in (0.5, 1.0) and "no harmless step" in cal.reason


def test_when_every_step_is_harmful_the_smallest_is_taken():
    cal = calibrate_sigma(lambda z: np.where(np.any(z, axis=1, keepdims=True), 0.0, 1.0) * np.ones((len(z), B)),
                          dim=3, popsize=4, sigmas=[0.5, 1.0], target_snr=1.0, seed=0, prompts=list(range(B)),
                          report=lambda _: None)
    assert cal.sigma == 0.5 and len(cal.levels) == 1 and "harmful" in cal.reason
