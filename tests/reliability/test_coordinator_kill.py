"""The coordinator SIGKILLed at the worst moments resumes to exactly the uninterrupted run.

A real process (coordinator_kill_driver.py) runs a search with the in-process FakePool and kills
itself with SIGKILL: in the middle of a generation, in the middle of a checkpoint write (after
the arrays, before the state; after the directory, before `latest`), and between a generation's
metrics line and its checkpoint. `--resume` (here: align(resume=True)) must then give the same
metrics lines, the same final search state and a byte-identical exported adapter. The engine is
the fake: exactness here is the coordinator's; with real engines it holds for greedy decoding on
one engine kind (docs/benchmarks.md, "Same candidates, same scores").
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from essa.run.checkpoint import load_latest
from essa.run.coordinator import align

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "essa"))
sys.path.insert(0, str(HERE))
from fake_pool import FakePool  # noqa: E402  (fixtures model_dir, straight: conftest.py)


def _lines(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


@pytest.mark.parametrize("point, generation", [("generation", 3), ("arrays", 3), ("rename", 3), ("metrics", 4)])
def test_sigkill_then_resume_equals_the_uninterrupted_run(point, generation, model_dir, straight, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(HERE / "coordinator_kill_driver.py"), str(model_dir), str(run), point, str(generation)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run / "adapter").exists()  # it really died before the end
    killed_at = load_latest(run).generation
    assert killed_at < 6

    align(None, run, resume=True, pool_factory=FakePool)

    assert _lines(run) == _lines(straight)
    a, b = load_latest(run), load_latest(straight)
    assert (a.generation, a.best.record(), a.sampler) == (b.generation, b.best.record(), b.sampler)
    np.testing.assert_array_equal(a.best.z, b.best.z)
    for key, value in b.strategy.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(a.strategy[key], value, err_msg=key)
        else:
            assert a.strategy[key] == value, key
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (run / "adapter" / name).read_bytes() == (straight / "adapter" / name).read_bytes(), name
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # a half-written checkpoint's temp folder is gone after the resume
