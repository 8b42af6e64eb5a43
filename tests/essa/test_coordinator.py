"""The coordinator with an in-process FakePool (tests/essa/fake_pool.py): calibration, learning,
validation and best point, the held-out comparison, resume after an interruption, flat rewards."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from essa.config import load_config
from essa.model.adapters import read_peft_adapter
from essa.run.checkpoint import load_latest
from essa.run.coordinator import align

sys.path.insert(0, str(Path(__file__).parent))
from fake_pool import FakePool, tiny_config, write_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def config(model_dir, *overrides):
    """fake_pool.tiny_config with the step size calibrated (search.sigma null), 12 generations, a
    checkpoint every 2."""
    return tiny_config(model_dir, "search.sigma=null", "run.checkpoint_every=2", "search.generations=12", *overrides)


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_calibrates_learns_and_exports_its_best_point(model_dir, tmp_path, capsys):
    pools = []
    run = tmp_path / "run"
    adapter = align(
        config(model_dir, "run.heldout_size=32", "run.heldout_split=test"),
        run,
        resume=False,
        pool_factory=lambda cfg, basis: pools.append(FakePool(cfg, basis)) or pools[-1],
    )
    assert pools[0].closed
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["sigma"] in [0.25, 0.5, 1.0, 2.0, 4.0] and cal["levels"][-1]["sigma"] == cal["sigma"]
    lines = metrics(run)
    start = lines[0]
    assert start["generation"] == -1 and start["validation_base"] < start["validation"]
    gens = [m for m in lines if m["generation"] >= 0]
    assert [m["generation"] for m in gens] == list(range(12))
    assert all("snr" in m and "reward_spread" in m for m in gens)
    best = max(m["validation"] for m in gens if "validation" in m)
    assert best > start["validation"] + 0.05  # it learned, on prompts it never trained on
    ckpt = load_latest(run)
    assert ckpt.best.validation == best
    heldout = json.loads((run / "heldout.json").read_text())
    assert heldout["prompts"] == 32 and heldout["split"] == "test" and heldout["low"] > 0
    base = heldout["from_base"]  # the fake base model scores 0.01 below the warm start on every prompt
    assert base["after"] == heldout["after"] and abs(base["before"] - (heldout["before"] - 0.01)) < 1e-6
    out = capsys.readouterr().out
    assert "held-out test" in out and "base model -> best" in out
    lora, _ = read_peft_adapter(adapter)
    assert set(lora) == {f"model.layers.{i}.self_attn.q_proj" for i in range(2)}
    provenance = json.loads((adapter / "essa.json").read_text())
    assert provenance["run"] == "run" and str(tmp_path) not in json.dumps(provenance)  # no local paths to share


def test_an_interrupted_run_resumes_to_the_same_result(model_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    align(config(model_dir), straight, resume=False, pool_factory=FakePool)
    with pytest.raises(KeyboardInterrupt):
        align(
            config(model_dir),
            resumed,
            resume=False,
            pool_factory=lambda cfg, basis: FakePool(cfg, basis, fail_at_generation=7),
        )
    assert load_latest(resumed).generation == 6
    align(None, resumed, resume=True, pool_factory=FakePool)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(metrics(resumed)) == strip(metrics(straight))
    a, b = load_latest(resumed), load_latest(straight)
    assert a.generation == b.generation == 12
    np.testing.assert_array_equal(a.best.z, b.best.z)
    for key, value in b.strategy.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(a.strategy[key], value, err_msg=key)
    assert (resumed / "adapter" / "adapter_model.safetensors").read_bytes() == (
        straight / "adapter" / "adapter_model.safetensors"
    ).read_bytes()


def test_a_run_stopped_before_its_first_checkpoint_resumes_with_one_start_line(model_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    align(config(model_dir), straight, resume=False, pool_factory=FakePool)
    with pytest.raises(KeyboardInterrupt):  # after the start's validation line, before any checkpoint
        align(
            config(model_dir),
            resumed,
            resume=False,
            pool_factory=lambda cfg, basis: FakePool(cfg, basis, fail_at_generation=0),
        )
    assert load_latest(resumed) is None and [m["generation"] for m in metrics(resumed)] == [-1]
    align(None, resumed, resume=True, pool_factory=FakePool)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(metrics(resumed)) == strip(metrics(straight))  # one generation -1 line, as uninterrupted


def test_a_run_stopped_in_its_final_held_out_comparison_does_it_on_resume(model_dir, tmp_path):
    class StopsInHeldout(FakePool):
        def evaluate(self, vectors, split, indices, generation=-1, **kw):
            if split == "test":
                raise KeyboardInterrupt  # the run is stopped after its last generation
            return super().evaluate(vectors, split, indices, generation, **kw)

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    cfg = config(model_dir, "search.generations=4", "run.heldout_size=16")
    align(cfg, straight, resume=False, pool_factory=FakePool)
    with pytest.raises(KeyboardInterrupt):
        align(cfg, stopped, resume=False, pool_factory=StopsInHeldout)
    assert load_latest(stopped).generation == 4 and not (stopped / "heldout.json").exists()
    pools = []
    align(None, stopped, resume=True, pool_factory=lambda c, b: pools.append(FakePool(c, b)) or pools[-1])
    assert json.loads((stopped / "heldout.json").read_text()) == json.loads((straight / "heldout.json").read_text())
    assert {split for split, _, _ in pools[0].calls} == {"test"}  # no generation redone, no validation
    assert (stopped / "reward.png").is_file()
    align(None, stopped, resume=True, pool_factory=lambda c, b: pytest.fail("nothing left to do: no engines"))


def test_flat_rewards_leave_the_warm_start_in_place(model_dir, tmp_path):
    run = tmp_path / "flat"
    align(
        config(model_dir, "search.sigma=0.5", "search.generations=4"),
        run,
        resume=False,
        pool_factory=lambda cfg, basis: FakePool(cfg, basis, flat=True),
    )
    assert not (run / "calibration.json").exists()  # a set sigma is not calibrated
    ckpt = load_latest(run)
    assert ckpt.strategy["flat_generations"] == 4
    np.testing.assert_array_equal(ckpt.strategy["mean"], 0.0)
    assert all(m["snr"] == 0.0 for m in metrics(run) if m["generation"] >= 0)


def test_resume_with_a_bad_generation_count_leaves_the_run_intact(model_dir, tmp_path):
    from essa.config import ConfigError

    run = tmp_path / "run"
    align(config(model_dir, "search.sigma=0.5", "search.generations=2"), run, resume=False, pool_factory=FakePool)
    saved = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="search.generations=-5"):
        align(None, run, resume=True, changes={"search.generations": -5}, pool_factory=FakePool)
    assert (run / "config.yaml").read_text() == saved


def test_resuming_a_finished_run_starts_no_pool(model_dir, tmp_path):
    run = tmp_path / "run"
    align(config(model_dir, "search.sigma=0.5", "search.generations=2"), run, resume=False, pool_factory=FakePool)

    def no_pool(cfg, basis):
        raise AssertionError("a finished run must not start engines")

    assert (align(None, run, resume=True, pool_factory=no_pool) / "adapter_model.safetensors").is_file()


def test_resuming_a_finished_run_says_which_changes_it_ignores(model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    align(config(model_dir, "search.sigma=0.5", "search.generations=2"), run, resume=False, pool_factory=FakePool)
    capsys.readouterr()
    align(None, run, resume=True, changes={"engine.timeout_s": 60.0}, pool_factory=FakePool)
    assert "has nothing left to run; ignoring engine.timeout_s" in capsys.readouterr().err


def test_a_torn_last_metrics_line_is_dropped_and_the_run_resumes(model_dir, tmp_path, capsys):
    straight, torn = tmp_path / "straight", tmp_path / "torn"
    for run in (straight, torn):
        align(config(model_dir, "search.sigma=0.5", "search.generations=4"), run, resume=False, pool_factory=FakePool)
    # a kill while writing the line of generation 3 (of 4), after the generation-2 checkpoint
    lines = (torn / "metrics.jsonl").read_text().splitlines()
    (torn / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    (torn / "checkpoints" / "latest").write_text("gen_000002\n")
    align(None, torn, resume=True, changes={"search.generations": 4}, pool_factory=FakePool)
    assert "torn line" in capsys.readouterr().err
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(metrics(torn)) == strip(metrics(straight))


def test_resume_may_change_placement_and_length_but_not_the_search(model_dir, tmp_path, capsys):
    from essa.config import ConfigError

    run = tmp_path / "run"
    align(config(model_dir, "search.sigma=0.5", "search.generations=2"), run, resume=False, pool_factory=FakePool)
    saved = (run / "config.yaml").read_text()
    for changes, overrides, refused in (
        ({"search.popsize": 4}, [], "search.popsize (8 -> 4)"),
        ({}, ["search.sigma=0.3"], "search.sigma (0.5 -> 0.3)"),
        ({"engine.gpus": 1}, ["engine.lora_kernel=grouped"], "engine.lora_kernel"),
    ):
        with pytest.raises(ConfigError, match=re.escape(refused)):
            align(None, run, resume=True, changes=changes, overrides=overrides, pool_factory=FakePool)
        assert (run / "config.yaml").read_text() == saved  # nothing written by a refused resume
    seen = []
    align(
        None,
        run,
        resume=True,
        changes={"search.generations": 3, "engine.workers": 2},
        overrides=["engine.timeout_s=60"],
        pool_factory=lambda cfg, basis: seen.append(cfg) or FakePool(cfg, basis),
    )
    assert (seen[0].engine.workers, seen[0].engine.timeout_s) == (2, 60.0)  # the pool was built with the change
    assert "engine.workers 1 -> 2" in capsys.readouterr().out
    assert load_latest(run).generation == 3
    assert "workers: 2" in (run / "config.yaml").read_text()  # and the run keeps it


def test_a_run_whose_engines_fail_to_start_is_kept_and_resumes_with_corrected_flags(model_dir, tmp_path, capsys):
    from essa.workers.errors import PoolError

    def no_gpus(cfg, basis):
        if cfg.engine.gpus:
            raise PoolError(f"--gpus {cfg.engine.gpus} asks for {cfg.engine.gpus} GPUs but the Ray cluster has 0")
        return FakePool(cfg, basis)

    run = tmp_path / "run"
    with pytest.raises(PoolError):
        align(
            config(model_dir, "search.sigma=0.5", "search.generations=2", "engine.gpus=2"),
            run,
            resume=False,
            pool_factory=no_gpus,
        )
    assert f"essa align --resume {run}" in capsys.readouterr().err
    adapter = align(None, run, resume=True, changes={"engine.gpus": 0}, pool_factory=no_gpus)
    assert load_latest(run).generation == 2 and (adapter / "adapter_model.safetensors").is_file()


def test_a_resume_this_machine_cannot_run_is_refused_before_any_engine_starts(model_dir, tmp_path, monkeypatch):
    from ray._private.accelerators import NvidiaGPUAcceleratorManager

    run = tmp_path / "run"
    align(config(model_dir, "search.sigma=0.5", "search.generations=2"), run, resume=False, pool_factory=FakePool)
    before = {f.relative_to(run): f.read_bytes() for f in run.rglob("*") if f.is_file()}
    monkeypatch.setattr(NvidiaGPUAcceleratorManager, "get_current_node_num_accelerators", staticmethod(lambda: 2))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    started = []
    with pytest.raises(ValueError, match="--gpus 3 asks for 3 GPUs but this machine has 2"):
        align(
            None,
            run,
            resume=True,
            changes={"search.generations": 3, "engine.gpus": 3},
            pool_factory=lambda cfg, basis: started.append(cfg) or FakePool(cfg, basis),
        )
    assert not started  # refused before the pool was built
    assert {f.relative_to(run): f.read_bytes() for f in run.rglob("*") if f.is_file()} == before
    align(
        None,
        run,
        resume=True,
        changes={"search.generations": 3, "engine.gpus": 2},
        pool_factory=lambda cfg, basis: started.append(cfg) or FakePool(cfg, basis),
    )
    assert started and load_latest(run).generation == 3


def test_resume_refuses_changed_data_or_reward_unless_allowed(model_dir, tmp_path, capsys):
    import os
    import shutil

    data = tmp_path / "data"
    shutil.copytree(Path(os.environ["ESSA_DATA_DIR"]) / "gsm8k", data / "gsm8k")
    reward = tmp_path / "reward.py"
    reward.write_text("def score(completion, example):\n    return 1.0\n")
    run = tmp_path / "run"
    align(
        config(
            model_dir,
            "search.sigma=0.5",
            "search.generations=1",
            f"task.data_dir={data}",
            f"task.reward={reward}:score",
        ),
        run,
        resume=False,
        pool_factory=FakePool,
    )
    recorded = json.loads((run / "inputs.json").read_text())
    assert set(recorded) == {"data", "reward", "model", "versions"}
    assert recorded["data"]["train"]["examples"] > 0 and recorded["reward"]["sha256"]

    # the data moved, unchanged: fine (task.data_dir may change on resume)
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    align(None, run, resume=True, changes={"search.generations": 2, "task.data_dir": str(moved)}, pool_factory=FakePool)
    # the reward file edited: refused, naming it and the way out
    reward.write_text("def score(completion, example):\n    return 0.5\n")
    saved = (run / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"reward: sha256 .* --allow-change reward"):
        align(None, run, resume=True, changes={"search.generations": 3}, pool_factory=FakePool)
    assert load_latest(run).generation == 2 and (run / "config.yaml").read_text() == saved  # nothing written
    # a test example changed: refused as data
    lines = (moved / "gsm8k" / "test.jsonl").read_text().splitlines()
    (moved / "gsm8k" / "test.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"data: test.examples .* --allow-change data reward"):
        align(None, run, resume=True, changes={"search.generations": 3}, pool_factory=FakePool)
    capsys.readouterr()
    align(
        None,
        run,
        resume=True,
        changes={"search.generations": 3},
        allow_change=("data", "reward"),
        pool_factory=FakePool,
    )
    assert "allowed by --allow-change" in capsys.readouterr().err
    assert load_latest(run).generation == 3
    assert json.loads((run / "inputs.json").read_text())["data"]["test"]["examples"] == len(lines) - 1


def test_a_new_run_pins_the_data_folder_it_found(model_dir, tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("ESSA_DATA_DIR", os.environ["ESSA_DATA_DIR"])
    run = tmp_path / "run"
    align(config(model_dir, "search.sigma=0.5", "search.generations=1"), run, resume=False, pool_factory=FakePool)
    assert f"data_dir: {Path(os.environ['ESSA_DATA_DIR']).resolve()}" in (run / "config.yaml").read_text()


class ScriptedValidationPool(FakePool):
    """FakePool whose validation of the mean follows a script (one value per validation call)."""

    def __init__(self, cfg, basis, script):
        super().__init__(cfg, basis)
        self.script = list(script)

    def evaluate(self, vectors, split, indices, generation=-1, details=False, texts=False):
        result = super().evaluate(vectors, split, indices, generation, details, texts)
        if split == "validation" and vectors is not None and generation == -1:
            result.rewards[:] = self.script.pop(0)  # one value for every prompt, or one per prompt
        return result


def test_backtracking_returns_to_the_best_validated_point_with_a_smaller_step(model_dir, tmp_path):
    run = tmp_path / "run"
    # validations: warm start 0.5, gen 2: 0.6 (best), gen 4: 0.4 (a fall: back to gen 2), gen 6 (last): 0.55
    align(
        config(model_dir, "search.sigma=0.5", "search.generations=6", "search.backtrack=0.5", "run.checkpoint_every=1"),
        run,
        resume=False,
        pool_factory=lambda cfg, basis: ScriptedValidationPool(cfg, basis, [0.5, 0.6, 0.4, 0.55]),
    )
    lines = {m["generation"]: m for m in metrics(run)}
    assert lines[3]["backtracked_to"] == 2 and "backtracked_to" not in lines[1]
    assert "backtracked_to" not in lines[5]  # the last validation never backtracks: the run ends there
    sigma_before, sigma_after = lines[3]["sigma"], lines[4]["sigma"]
    assert sigma_after < 0.6 * sigma_before  # halved, then one ordinary update
    from essa.run.checkpoint import load_checkpoint

    at_best = load_checkpoint(run / "checkpoints" / "gen_000002").strategy["mean"]
    after_fall = load_checkpoint(run / "checkpoints" / "gen_000004").strategy["mean"]
    np.testing.assert_array_equal(after_fall, at_best)  # generation 4 ended back at generation 2's mean
    best = load_latest(run).best
    assert (best.generation, best.validation, best.prompt_rewards) == (
        2,
        pytest.approx(0.6),
        [pytest.approx(0.6)] * 16,
    )


def test_a_fall_within_the_noise_of_validation_does_not_backtrack(model_dir, tmp_path):
    run = tmp_path / "run"
    noisy_best, noisy_lower = np.tile([0.9, 0.3], 8), np.tile([0.3, 0.86], 8)  # means 0.60 and 0.58
    align(
        config(model_dir, "search.sigma=0.5", "search.generations=6", "search.backtrack=0.5"),
        run,
        resume=False,
        pool_factory=lambda cfg, basis: ScriptedValidationPool(cfg, basis, [0.5, noisy_best, noisy_lower, 0.55]),
    )
    assert not any("backtracked_to" in m for m in metrics(run))
    assert load_latest(run).best.generation == 2


@pytest.mark.parametrize("fitness", ["mean", "prompt_zscore"])
def test_the_antithetic_es_learns_and_resumes_to_the_same_result(model_dir, tmp_path, fitness):
    es = ("search.strategy=es", "search.mean_lr=1.0", "search.sigma=1.0", f"search.fitness={fitness}")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    align(config(model_dir, *es), straight, resume=False, pool_factory=FakePool)
    lines = metrics(straight)
    best = max(m["validation"] for m in lines if m["generation"] >= 0 and "validation" in m)
    assert best > lines[0]["validation"] + 0.05  # it learned, on prompts it never trained on
    assert load_latest(straight).strategy["kind"] == "antithetic_es"
    with pytest.raises(KeyboardInterrupt):
        align(
            config(model_dir, *es),
            resumed,
            resume=False,
            pool_factory=lambda cfg, basis: FakePool(cfg, basis, fail_at_generation=5),
        )
    align(None, resumed, resume=True, pool_factory=FakePool)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(metrics(resumed)) == strip(metrics(straight))
    np.testing.assert_array_equal(load_latest(resumed).strategy["mean"], load_latest(straight).strategy["mean"])


class WarmStartBestPool(FakePool):
    """FakePool whose validation rewards fall with the distance from the warm start: no mean beats it."""

    def evaluate(self, vectors, split, indices, generation=-1, details=False, texts=False):
        result = super().evaluate(vectors, split, indices, generation, details, texts)
        if split == "validation" and vectors is not None:
            z = np.asarray(vectors) / self.scales
            result.rewards[:] = 0.5 - 0.01 * np.linalg.norm(z, axis=1)[:, None]
        return result


def test_when_no_validated_mean_beats_the_warm_start_every_report_says_the_export_is_the_warm_start(
    model_dir, tmp_path, capsys
):
    from essa.cli import print_summary
    from essa.report.status import format_status, run_status

    run = tmp_path / "run"
    adapter = align(
        config(model_dir, "search.sigma=1.0", "search.generations=4", "run.heldout_size=8", "run.heldout_split=test"),
        run,
        resume=False,
        pool_factory=WarmStartBestPool,
    )
    assert load_latest(run).best.generation == 0
    assert json.loads((run / "heldout.json").read_text())["same_point"] is True
    capsys.readouterr()
    print_summary(run, adapter)
    out = capsys.readouterr().out
    assert re.search(r"exported point, validation +0\.500, the warm start itself: no validated mean beat it", out)
    assert "after generation" not in out.split("exported point")[1].splitlines()[0]
    assert "the warm start itself" in format_status(run_status(run))
    assert (
        "| this adapter: the warm start itself (no validated mean beat it) | 0.5000 |"
        in (adapter / "README.md").read_text()
    )


def test_each_generation_logs_the_faults_of_its_own_pool_calls(model_dir, tmp_path):
    class FaultyPool(FakePool):
        """Counts an actor restart in generation 1's training call and a retry in generation 2's validation."""

        def evaluate(self, vectors, split, indices, generation=-1, details=False, texts=False):
            if split == "train" and generation == 1:
                self.stats["restarts"] += 1
                self.stats["retries"] += 1
            if split == "validation" and len(self.calls) and self.calls[-1][1] == 1:
                self.stats["retries"] += 1  # the mean's validation after generation 2 (index 1)
            return super().evaluate(vectors, split, indices, generation, details, texts)

    run = tmp_path / "run"
    align(config(model_dir, "search.generations=4", "search.sigma=0.5"), run, resume=False, pool_factory=FaultyPool)
    gens = [m for m in metrics(run) if m["generation"] >= 0]
    assert [m["faults"] for m in gens] == [
        {"restarts": 0, "retries": 0, "timeouts": 0},
        {"restarts": 1, "retries": 2, "timeouts": 0},  # its training call and its validation
        {"restarts": 0, "retries": 0, "timeouts": 0},
        {"restarts": 0, "retries": 0, "timeouts": 0},
    ]
    from essa.run.run_log import scalars

    assert scalars(gens[1])["faults/retries"] == 2.0


def test_a_time_budget_ends_the_search_like_its_last_generation_and_resume_extends_it(
    model_dir, tmp_path, monkeypatch, capsys
):
    from types import SimpleNamespace

    from essa.run import coordinator

    ticks = iter(range(0, 10**6, 10))  # a fake clock for the loop: every reading is 10 s after the last
    monkeypatch.setattr(coordinator, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    run = tmp_path / "run"
    cfg = config(model_dir, "search.sigma=0.5", "search.max_minutes=1", "run.heldout_size=16", "run.heldout_split=test")
    align(cfg, run, resume=False, pool_factory=FakePool)
    # a generation reads the clock four times (30 s), a validation twice (10 s): 30 + 30 reaches 60 s
    gens = [m for m in metrics(run) if m["generation"] >= 0]
    assert [m["generation"] for m in gens] == [0, 1] and [m["time"]["total"] for m in gens] == [30.0, 30.0]
    assert "validation" in gens[-1] and gens[-1]["time"]["validate"] == 10.0  # validated as the last one
    assert load_latest(run).generation == 2  # checkpointed as the last one
    assert (run / "heldout.json").is_file() and (run / "adapter" / "adapter_model.safetensors").is_file()
    assert "search.max_minutes=1 spent after generation 2 (1.2 min of search)" in capsys.readouterr().out

    def no_pool(cfg, basis):
        raise AssertionError("a run that spent its time must not start engines")

    align(None, run, resume=True, pool_factory=no_pool)
    assert "spent its search.max_minutes=1 (1.2 min, 2 generations" in capsys.readouterr().out
    from essa.report.status import format_status, run_status

    status = run_status(run)
    assert status["finished"] and status["search_seconds"] == 70.0 and status["generation"] == 2
    text = format_status(status)
    assert "1m10s of 1 min (search.max_minutes)" in text and re.search(r"^ETA\s+done$", text, re.M)
    # two minutes in all: the 70 s already spent count, so two more generations (100 s, then 140 s)
    align(None, run, resume=True, changes={"search.max_minutes": 2.0}, pool_factory=FakePool)
    gens = [m for m in metrics(run) if m["generation"] >= 0]
    assert [m["generation"] for m in gens] == [0, 1, 2, 3] and load_latest(run).generation == 4


def test_a_negative_time_budget_is_refused():
    with pytest.raises(ValueError, match=r"search.max_minutes=-1.0 \(--max-minutes\) must be >= 0"):
        load_config("gsm8k", None, {}, ["search.max_minutes=-1"])
