"""The antithetic ES (search/es.py) and fitness shaping (search/fitness.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from essa.search import AntitheticES, candidate_fitness


def _sphere_reward(X: np.ndarray, target: np.ndarray) -> np.ndarray:
    return -np.sum((X - target) ** 2, axis=1)


def test_candidates_come_in_antithetic_pairs_and_ask_is_idempotent() -> None:
    es = AntitheticES(20, 8, 0.3, seed=1, mean0=np.full(20, 2.0))
    X = es.ask()
    assert X.shape == (8, 20) and X.dtype == np.float64
    np.testing.assert_allclose(X[:4] + X[4:], 2 * es.mean[None, :] * np.ones((4, 1)), atol=1e-12)
    np.testing.assert_array_equal(es.ask(), X)


def test_the_mean_moves_lr_sigma_times_the_z_scored_gradient_estimate() -> None:
    es = AntitheticES(5, 4, 0.5, seed=0, mean_lr=0.2)
    X = es.ask()
    eps = (X - es.mean) / es.sigma
    scores = np.array([1.0, 0.0, 0.0, 3.0])
    f = (scores - scores.mean()) / scores.std()
    es.tell(X, scores)
    np.testing.assert_allclose(es.mean, 0.2 * 0.5 * (f @ eps) / 4, atol=1e-12)
    assert es.sigma == 0.5 and es.generation == 1


def test_a_flat_generation_moves_nothing_and_is_counted() -> None:
    es = AntitheticES(6, 4, 1.0, seed=0)
    es.tell(es.ask(), np.full(4, 0.3))
    np.testing.assert_array_equal(es.mean, np.zeros(6))
    assert es.flat_generations == 1 and es.generation == 1


def test_the_update_does_not_depend_on_the_reward_scale_or_offset() -> None:
    a, b = AntitheticES(10, 6, 0.4, seed=3), AntitheticES(10, 6, 0.4, seed=3)
    scores = np.array([0.1, 0.5, 0.2, 0.9, 0.0, 0.3])
    a.tell(a.ask(), scores)
    b.tell(b.ask(), 7.0 * scores - 2.0)
    np.testing.assert_allclose(a.mean, b.mean, atol=1e-12)


def test_mean_improves_on_a_noisy_500d_sphere_and_random_rewards_do_not_move_it_far() -> None:
    """Signal adds up linearly, noise like a random walk: on a sphere the mean approaches the optimum;
    with rewards unrelated to the candidates it only diffuses."""
    rng = np.random.default_rng(0)
    target = np.full(500, 0.5)
    es = AntitheticES(500, 16, 0.5, seed=0, mean_lr=0.5)
    for _ in range(150):
        X = es.ask()
        es.tell(X, _sphere_reward(X, target) + rng.normal(0, 5.0, 16))
    assert np.linalg.norm(es.mean - target) < 0.6 * np.linalg.norm(target)
    lost = AntitheticES(500, 16, 0.5, seed=0, mean_lr=0.5)
    for _ in range(150):
        lost.tell(lost.ask(), rng.normal(size=16))
    # the random walk: about lr * sigma * sqrt(n / popsize) per generation, times sqrt(generations)
    walk = 0.5 * 0.5 * np.sqrt(500 / 16) * np.sqrt(150)
    assert np.linalg.norm(lost.mean) < 1.5 * walk


def test_maximizes() -> None:
    es = AntitheticES(3, 8, 0.1, seed=0, mean_lr=1.0)
    for _ in range(50):
        X = es.ask()
        es.tell(X, X[:, 0])  # reward grows with the first coordinate
    assert es.mean[0] > 0.5 and abs(es.mean[1]) < es.mean[0]


def test_state_round_trip_through_json_and_npz_asks_the_same_population(tmp_path) -> None:
    es = AntitheticES(12, 6, 0.3, seed=5, mean_lr=0.7)
    for _ in range(3):
        X = es.ask()
        es.tell(X, X.sum(axis=1))
    es.ask()  # pending, as a checkpoint between ask and tell would hold it
    state = es.state_dict()
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    np.savez(tmp_path / "a.npz", **arrays)
    meta = json.loads(json.dumps({k: v for k, v in state.items() if not isinstance(v, np.ndarray)}))
    loaded = dict(meta)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        loaded.update({k: data[k] for k in data.files})
    twin = AntitheticES(12, 6, 1.0, seed=0)
    twin.load_state_dict(loaded)
    np.testing.assert_array_equal(twin.ask(), es.ask())
    X = es.ask()
    es.tell(X, X[:, 0])
    twin.tell(X, X[:, 0])
    np.testing.assert_array_equal(twin.mean, es.mean)
    np.testing.assert_array_equal(twin.ask(), es.ask())
    assert (twin.sigma, twin.mean_lr, twin.generation) == (es.sigma, es.mean_lr, es.generation)


def test_incompatible_states_and_arguments_are_refused() -> None:
    es = AntitheticES(4, 4, 0.5, seed=0)
    with pytest.raises(ValueError, match="not an antithetic ES state"):
        es.load_state_dict({"variant": "sep", "dim": 4, "popsize": 4})
    with pytest.raises(ValueError, match=r"\(dim, popsize\) = \(5, 4\)"):
        es.load_state_dict(AntitheticES(5, 4, 0.5, seed=0).state_dict())
    with pytest.raises(ValueError, match="popsize must be even"):
        AntitheticES(4, 5, 0.5, seed=0)
    with pytest.raises(ValueError, match="mean_lr"):
        AntitheticES(4, 4, 0.5, seed=0, mean_lr=0)
    with pytest.raises(RuntimeError, match="ask"):
        es.tell(np.zeros((4, 4)), np.zeros(4))
    X = es.ask()
    with pytest.raises(ValueError, match="non-finite"):
        es.tell(X, np.array([0.0, np.nan, 0.0, 0.0]))


def test_restart_at_moves_the_search() -> None:
    es = AntitheticES(4, 4, 0.5, seed=0)
    es.ask()
    es.restart_at(np.ones(4), 0.25)
    X = es.ask()
    np.testing.assert_allclose((X[:2] + X[2:]) / 2, np.ones((2, 4)))
    assert es.sigma == 0.25


@pytest.mark.parametrize(
    ("rewards", "expected"),
    [
        # prompt 0 every candidate solves, prompt 1 none: neither counts; prompt 2 only candidate 0 solves
        (
            [[1, 0, 1], [1, 0, 0], [1, 0, 0], [1, 0, 0]],
            [np.sqrt(3) / 3, -np.sqrt(3) / 9, -np.sqrt(3) / 9, -np.sqrt(3) / 9],
        ),
        ([[0.5, 0.5], [0.5, 0.5]], [0.0, 0.0]),  # all tie
    ],
)
def test_prompt_zscore_counts_only_prompts_the_candidates_differ_on(rewards, expected) -> None:
    np.testing.assert_allclose(candidate_fitness(np.array(rewards, dtype=float), "prompt_zscore"), expected)


def test_prompt_zscore_weighs_a_rare_success_above_a_common_one() -> None:
    # candidate 0 alone solves a hard prompt; candidate 1 and three others solve an easy one
    r = np.zeros((8, 2))
    r[0, 0] = 1.0
    r[1:5, 1] = 1.0
    assert candidate_fitness(r, "mean")[0] == candidate_fitness(r, "mean")[1]
    shaped = candidate_fitness(r, "prompt_zscore")
    assert shaped[0] > shaped[1]


def test_fitness_modes_refuse_bad_input() -> None:
    np.testing.assert_allclose(candidate_fitness(np.array([[0.0, 1.0], [1.0, 1.0]])), [0.5, 1.0])
    with pytest.raises(ValueError, match="unknown fitness mode 'x'; known: mean, prompt_zscore"):
        candidate_fitness(np.zeros((2, 2)), "x")
    with pytest.raises(ValueError, match="shape"):
        candidate_fitness(np.zeros(3))
