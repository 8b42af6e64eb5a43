"""The soak's bounds (scripts/soak.py) hold on a short run, and a planted leak breaks them.

The coordinator runs 60 generations against FakePool with a checkpoint every generation (3 kept):
resident memory, open files, RAM scratch and the run directory must stay within the bounds the
script states; the long runs and their figures are in the script's output (docs/benchmarks.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import soak


def test_sixty_generations_stay_within_the_soak_bounds(tmp_path):
    run = tmp_path / "run"
    samples, final = soak.soak("fake", 60, run, every=1000)
    assert [s["generation"] for s in samples] == list(range(1, 61))
    assert soak.check_bounds(samples, final, run, keep=3) == []
    assert len(list((run / "checkpoints").glob("gen_*"))) == 3  # pruned as it went


def test_a_leak_of_open_files_breaks_the_bound(tmp_path, monkeypatch):
    leaked = []
    evaluate = soak.SampledPool.evaluate

    def leaky(self, vectors, split, indices, generation=-1, **kw):
        if split == "train":
            leaked.append(open(__file__))
        return evaluate(self, vectors, split, indices, generation, **kw)

    monkeypatch.setattr(soak.SampledPool, "evaluate", leaky)
    try:
        samples, final = soak.soak("fake", 40, tmp_path / "run", every=1000)
    finally:
        for f in leaked:
            f.close()
    problems = soak.check_bounds(samples, final, tmp_path / "run", keep=3)
    assert any(p.startswith("open files rose by") for p in problems), problems


@pytest.mark.parametrize("extra_mib", [0, 8])
def test_the_run_directory_bound_counts_kept_checkpoints_and_catches_growth(extra_mib, tmp_path):
    run = tmp_path / "run"
    samples, final = soak.soak("fake", 12, run, every=1000)
    (run / "stray.bin").write_bytes(b"\0" * (extra_mib * 2**20))
    final["run_mib"] = soak.sample(run)["run_mib"]  # the run folder again, the stray file included
    problems = soak.check_bounds(samples, final, run, keep=3)
    assert bool(problems) == bool(extra_mib), problems
