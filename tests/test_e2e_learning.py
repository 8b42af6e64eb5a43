"""A short real search raises a dense reward on prompts it never trained on.

The embedded model in real vLLM inside a real Ray actor; principal warm start; the step size
calibrated as in any default run; the reward examples/rewards/dense.py:concise (shorter answers
score higher, smoothly, in [0, 1]). Asserted: the best validated point beats the warm start on
the validation prompts, and the exported point beats it on test prompts the search never saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[1]


def test_a_short_search_raises_a_dense_reward_on_unseen_prompts(tmp_path):
    run = tmp_path / "run"
    args = [
        "align",
        "--task",
        "gsm8k",
        "--gpus",
        "0",
        "--init",
        "principal",
        "--popsize",
        "8",
        "--batch-size",
        "8",
        "--max-new-tokens",
        "48",
        "--generations",
        "6",
        "--reward",
        str(REPO / "examples" / "rewards" / "dense.py") + ":concise",
        "--run-dir",
        str(run),
        "task.val_size=16",
        "run.validate_every=3",
        "run.checkpoint_every=3",
        "run.heldout_size=24",
        "engine.enforce_eager=true",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "essa.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    start = lines[0]["validation"]
    best = max(m["validation"] for m in lines if "validation" in m)
    assert best >= start + 0.03, f"validation never rose: start {start:.3f}, best {best:.3f}"
    heldout = json.loads((run / "heldout.json").read_text())
    assert heldout["split"] == "test" and heldout["prompts"] == 24
    assert heldout["after"] > heldout["before"], heldout
    assert json.loads((run / "calibration.json").read_text())["sigma"] > 0
