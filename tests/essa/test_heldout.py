"""essa.heldout.compare_heldout with a task that has standard figures (details), as Countdown does."""

from __future__ import annotations

import json

import numpy as np

from essa.heldout import compare_heldout
from essa.rewards.task import load_task
from essa.config import load_config
from essa.workers.pool import PoolResult


class FakeCountdownPool:
    """Scores the base model 0 everywhere, the warm start on prompts 0-1, the best point on 0-3."""

    def evaluate(self, vectors, split, indices, generation=-1, details=False, texts=False):
        solved = [set()] if vectors is None else [{0, 1}, {0, 1, 2, 3}]
        correct = np.array([[float(i in s) for i in indices] for s in solved])
        return PoolResult(correct * 0.9 + 0.1, np.zeros(len(solved)), {},
                          details={"correct": correct, "formatted": np.ones_like(correct)})


def test_the_comparison_names_its_label_and_reports_base_warm_start_and_best(tmp_path, capsys):
    task = load_task(load_config("countdown").task)
    record = compare_heldout(FakeCountdownPool(), task, np.zeros((2, 3)), "test", 20, tmp_path,
                             file="check.json", label="my check")
    out = capsys.readouterr().out
    assert "[essa] my check test (correct), warm start -> best: 10.0% -> 20.0% on 20 prompts" in out
    assert "[essa] my check test (correct), base model -> best: 0.0% -> 20.0%" in out
    assert json.loads((tmp_path / "check.json").read_text()) == record
    assert record["standard"]["after"]["exact_acc"] == 0.2 and record["from_base"]["before"] == 0.0
