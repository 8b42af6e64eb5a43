"""Step-size calibration with a synthetic scorer whose signal grows with the step."""

from __future__ import annotations

import numpy as np
import pytest

from essa.run.calibration import calibrate_sigma, calibration_prompts

B = 16
SCREEN, CONFIRM = list(range(B)), list(range(B, 2 * B))


def scorer(gain: float, calls: list, fluke: float = 0.0):
    """Rewards: a candidate effect proportional to z along one axis, plus noise fixed per (row,
    prompt). `fluke`: on the screening prompts only, each candidate also gets a fixed offset
    unrelated to z, as chance gives one batch of prompts: a spread that a second batch does not see."""
    noise = np.random.default_rng(5).normal(0, 0.1, size=(64, 4 * B))
    offsets = fluke * np.random.default_rng(6).standard_normal(64)

    def score(z: np.ndarray, prompts: list[int]) -> np.ndarray:
        calls.append((z.copy(), list(prompts)))
        effect = gain * z[:, :1]  # (rows, 1)
        chance = np.array([[offsets[i] if p in SCREEN else 0.0 for p in prompts] for i in range(len(z))])
        if len(z) > 1 and not z[0].any():  # the warm start's row: no offset
            chance[0] = 0.0
        return 0.5 + effect + chance + noise[: len(z)][:, prompts]

    return score


def test_stops_at_the_smallest_step_with_enough_signal_confirmed_on_a_second_batch():
    calls = []
    cal = calibrate_sigma(
        scorer(0.02, calls),
        dim=6,
        popsize=16,
        sigmas=[2.0, 0.25, 1.0, 0.5, 4.0],
        target_snr=1.0,
        seed=0,
        prompts=SCREEN,
        confirm_prompts=CONFIRM,
        report=lambda _: None,
    )
    tried = [lv["sigma"] for lv in cal.levels]
    assert tried == sorted(tried) and tried[-1] == cal.sigma  # ascending, stopped at the pick
    assert all(float(lv["snr"]) < 1.0 for lv in cal.levels[:-1]) and float(cal.levels[-1]["snr"]) >= 1.0
    assert float(cal.levels[-1]["confirmed_snr"]) >= 1.0 and "confirmed" in cal.reason
    assert 0.25 < cal.sigma < 4.0
    screens, (confirm_z, confirm_prompts) = calls[:-1], calls[-1]
    assert (
        len(screens) == len(tried) and len(screens[0][0]) == 17 and not screens[0][0][0].any()
    )  # row 0: the warm start
    assert all(prompts == SCREEN for _, prompts in screens) and confirm_prompts == CONFIRM
    # the same directions at every size: only the scale differs; the confirmation re-scores the pick's candidates
    np.testing.assert_allclose(screens[1][0] / tried[1], screens[0][0][1:] / tried[0])
    np.testing.assert_allclose(confirm_z, screens[-1][0])
    assert cal.confirm_prompts == CONFIRM


def test_a_spread_only_the_screening_batch_shows_is_not_confirmed():
    """Chance gives the screening batch a spread at every size; only a real effect survives the second batch."""
    cal = calibrate_sigma(
        scorer(0.05, [], fluke=0.06),
        dim=6,
        popsize=16,
        sigmas=[0.25, 0.5, 1.0, 2.0],
        target_snr=1.0,
        seed=0,
        prompts=SCREEN,
        confirm_prompts=CONFIRM,
        report=lambda _: None,
    )
    first = cal.levels[0]
    assert float(first["snr"]) >= 1.0 and float(first["confirmed_snr"]) < 1.0  # fooled the screen, not the confirmation
    assert cal.sigma > 0.25 and float(cal.levels[-1]["confirmed_snr"]) >= 1.0
    unconfirmed = calibrate_sigma(
        scorer(0.05, [], fluke=0.06),
        dim=6,
        popsize=16,
        sigmas=[0.25, 0.5, 1.0, 2.0],
        target_snr=1.0,
        seed=0,
        prompts=SCREEN,
        report=lambda _: None,
    )
    assert unconfirmed.sigma == 0.25 and "unconfirmed" in unconfirmed.reason  # what one batch alone would pick


def test_without_enough_signal_it_takes_the_largest_snr():
    cal = calibrate_sigma(
        lambda z, prompts: np.zeros((len(z), len(prompts))),
        dim=3,
        popsize=4,
        sigmas=[0.5, 1.0, 2.0],
        target_snr=1.0,
        seed=0,
        prompts=SCREEN,
        confirm_prompts=CONFIRM,
        report=lambda _: None,
    )
    assert len(cal.levels) == 3 and cal.sigma == 0.5  # all flat: snr 0 everywhere, the smaller step
    assert "no harmless step reached" in cal.reason


def test_same_seed_same_result_and_the_record_is_json():
    import json

    runs = [
        calibrate_sigma(scorer(0.05, []), 6, 8, [0.5, 1, 2, 4], 1.0, 3, [1, 2], [3, 4], report=lambda _: None)
        for _ in range(2)
    ]
    assert runs[0].as_dict() == runs[1].as_dict()
    json.dumps(runs[0].as_dict())


@pytest.mark.parametrize("size, batch", [(100, 8), (5, 8)])
def test_calibration_prompts_are_fixed_distinct_and_in_range(size, batch):
    (screen, confirm), again = calibration_prompts(size, batch, 0), calibration_prompts(size, batch, 0)
    assert (screen, confirm) == again
    for part in (screen, confirm):
        assert len(set(part)) == len(part) == min(size, batch) and all(0 <= i < size for i in part)
    if size >= 2 * batch:
        assert not set(screen) & set(confirm)  # two batches of distinct prompts
    assert calibration_prompts(size, batch, 1)[0] != screen or size <= 1


def test_a_step_that_wrecks_the_warm_start_is_not_chosen():
    """Large steps: a wide spread (high snr) from candidates that lost most of their reward."""
    noise = np.random.default_rng(2).normal(0, 0.05, size=(64, B))

    def score(z, prompts):
        size = np.abs(z).mean(axis=1, keepdims=True)  # ~0.8 sigma
        damage = np.where(size > 2.0, 0.4 * size * np.abs(z[:, 1:2]), 0.0)
        return 0.6 + 0.004 * z[:, :1] - damage + noise[: len(z), : len(prompts)]

    cal = calibrate_sigma(
        score,
        dim=6,
        popsize=16,
        sigmas=[0.5, 1.0, 4.0, 8.0],
        target_snr=1.0,
        seed=0,
        prompts=SCREEN,
        confirm_prompts=CONFIRM,
        report=lambda _: None,
    )
    assert cal.levels[-1]["sigma"] == 4.0 and cal.levels[-1]["harmful"]  # tried, found harmful, stopped there
    assert float(cal.levels[-1]["snr"]) > max(float(lv["snr"]) for lv in cal.levels[:-1])
    assert cal.sigma in (0.5, 1.0) and "no harmless step" in cal.reason
    # the antithetic ES does not refuse it: its mean moves along pair differences, where even damage cancels
    es = calibrate_sigma(
        score,
        dim=6,
        popsize=16,
        sigmas=[0.5, 1.0, 4.0, 8.0],
        target_snr=1.0,
        seed=0,
        prompts=SCREEN,
        confirm_prompts=CONFIRM,
        report=lambda _: None,
        refuse_harmful=False,
    )
    assert es.sigma == 4.0 and not any(lv["harmful"] for lv in es.levels) and "confirmed" in es.reason


def test_when_every_step_is_harmful_the_smallest_is_taken():
    cal = calibrate_sigma(
        lambda z, p: np.where(np.any(z, axis=1, keepdims=True), 0.0, 1.0) * np.ones((len(z), len(p))),
        dim=3,
        popsize=4,
        sigmas=[0.5, 1.0],
        target_snr=1.0,
        seed=0,
        prompts=SCREEN,
        confirm_prompts=CONFIRM,
        report=lambda _: None,
    )
    assert cal.sigma == 0.5 and len(cal.levels) == 1 and "harmful" in cal.reason
