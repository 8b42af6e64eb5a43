"""essa.report.heldout.compare_heldout with a task that has standard figures (details), as Countdown does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from essa.config import load_config
from essa.report.heldout import compare_heldout
from essa.rewards.task import load_task
from essa.workers.pool import PoolResult


class FakeCountdownPool:
    """Scores the base model 0 everywhere, the warm start on prompts 0-1, the best point on 0-3."""

    def evaluate(self, vectors, split, indices, generation=-1, details=False, texts=False):
        solved = [set()] if vectors is None else [{0, 1}, {0, 1, 2, 3}]
        correct = np.array([[float(i in s) for i in indices] for s in solved])
        return PoolResult(
            correct * 0.9 + 0.1,
            np.zeros(len(solved)),
            {},
            details={"correct": correct, "formatted": np.ones_like(correct)},
        )


def test_the_comparison_names_its_label_and_reports_base_warm_start_and_best(tmp_path, capsys):
    task = load_task(load_config("countdown").task)
    record = compare_heldout(
        FakeCountdownPool(),
        task,
        np.array([[0.0, 0, 0], [1, 0, 0]]),
        "test",
        20,
        tmp_path,
        out=tmp_path / "check.json",
        label="my check",
    )
    out = capsys.readouterr().out
    assert "[essa] my check test (correct), warm start -> best: 10.0% -> 20.0% on 20 prompts" in out
    assert "[essa] my check test (correct), base model -> best: 0.0% -> 20.0%" in out
    assert json.loads((tmp_path / "check.json").read_text()) == record
    assert record["standard"]["after"]["exact_acc"] == 0.2 and record["from_base"]["before"] == 0.0


class FakeBatchNoisePool(FakeCountdownPool):
    """Like FakeCountdownPool, but the second row of a call always differs from the first, as two copies of
    one adapter may in one batch of a real engine; records the rows each call scored."""

    def __init__(self):
        self.rows = []

    def evaluate(self, vectors, split, indices, generation=-1, details=False, texts=False):
        self.rows.append(None if vectors is None else len(vectors))
        result = super().evaluate(vectors, split, indices, generation, details, texts)
        if vectors is None:
            return result
        n = len(vectors)
        return PoolResult(
            result.rewards[:n], result.tokens[:n], {}, details={k: v[:n] for k, v in result.details.items()}
        )


def test_an_export_that_is_the_warm_start_is_scored_once_and_differs_by_nothing(tmp_path, capsys):
    task = load_task(load_config("countdown").task)
    pool = FakeBatchNoisePool()
    record = compare_heldout(pool, task, np.zeros((2, 3)), "test", 20, tmp_path)
    assert pool.rows == [1, None]  # one row for both sides, then the base model
    assert record["same_point"] is True and record["before"] == record["after"] == 0.1
    assert record["diff"] == 0.0 and record["low"] == record["high"] == 0.0
    assert "the exported point is the warm start itself" in capsys.readouterr().out
    pool = FakeBatchNoisePool()
    assert compare_heldout(pool, task, np.array([[0.0, 0, 0], [0, 0, 1]]), "test", 20, tmp_path)["same_point"] is False
    assert pool.rows == [1, 1, None]  # each point alone in its call


def test_a_shaped_training_reward_is_reported_beside_the_benchmark_headline(tmp_path, capsys):
    config = load_config("countdown")
    config.task.reward = "essa.rewards.countdown:partial_credit"
    task = load_task(config.task)
    record = compare_heldout(FakeCountdownPool(), task, np.array([[0.0, 0, 0], [1, 0, 0]]), "test", 20, tmp_path)
    out = capsys.readouterr().out
    assert record["metric"] == "correct" and record["after"] == 0.2  # the benchmark's figure, not the reward
    assert record["reward"]["name"] == "essa.rewards.countdown:partial_credit"
    assert record["reward"]["diff"] == pytest.approx(record["reward_after"] - record["reward_before"])
    assert "(reward: essa.rewards.countdown:partial_credit), warm start -> best: 0.1900 -> 0.2800" in out
