"""The comparison's own logic (scripts/compare_grpo.py, scripts/timed_side.py): the summary's common
target and times, and a side stopped at its budget with its whole process tree. The sides
themselves (essa, TRL) are measured by the script; here subprocesses of plain Python stand in."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import compare_grpo
import timed_side


def run(peak_gib: float) -> dict:
    return {"peak_rss": peak_gib * timed_side.GIB, "wall_s": 900.0}


def test_summary_times_both_sides_to_half_the_larger_gain():
    points = [
        {"side": "essa", "reward": r, "wall_s": t, "generation": g}
        for g, (r, t) in enumerate([(0.55, 100), (0.70, 300), (0.60, 880)], 1)
    ]
    points += [
        {"side": "grpo", "reward": r, "wall_s": t, "step": s}
        for s, (r, t) in enumerate([(0.52, 200), (0.58, 500), (0.65, 890)], 1)
    ]
    summary = compare_grpo.summarize({"essa": run(4.0), "grpo": run(3.0)}, points, start=0.50)
    assert abs(summary["target"] - 0.575) < 1e-12  # start + half of GRPO's final gain (0.15 > essa's 0.10)
    rows = {r["side"]: r for r in summary["rows"]}
    assert rows["essa"]["time_to_target_s"] == 300 and rows["grpo"]["time_to_target_s"] == 500
    assert rows["essa"]["best"] == 0.70 and rows["essa"]["final"] == 0.60 and rows["essa"]["trained"] == 3
    assert rows["grpo"]["time_to_half_own_gain_s"] == 500 and rows["grpo"]["peak_rss_gib"] == 3.0
    assert "not reached" not in compare_grpo.format_table(summary)


def test_no_target_when_no_side_beats_the_start():
    points = [{"side": "essa", "reward": 0.4, "wall_s": 10, "generation": 1}]
    summary = compare_grpo.summarize({"essa": run(1.0)}, points, start=0.5)
    assert summary["target"] is None and summary["rows"][1]["time_to_target_s"] is None
    assert "no side beat the start" in compare_grpo.format_table(summary)


CHILD = """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(grandchild.pid, flush=True)
time.sleep(120)
"""


def test_a_side_is_stopped_at_its_budget_with_its_whole_tree(tmp_path):
    log = tmp_path / "side.log"
    started = time.monotonic()
    result = timed_side.run_side("fake", [sys.executable, "-c", CHILD], log, budget_s=3.0, count_points=lambda: 0)
    assert time.monotonic() - started < 60
    assert result["stopped_by_budget"] and result["wall_s"] >= 3.0
    assert result["peak_rss"] > 0 and result["peak_processes"] == 2  # the side and its grandchild
    grandchild = int(log.read_text().split()[0])
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_a_killed_comparison_stops_the_side_it_was_running(tmp_path):
    import signal
    import subprocess

    log = tmp_path / "side.log"
    driver = (
        f"import sys; sys.path.insert(0, {str(Path(timed_side.__file__).parent)!r}); import timed_side; "
        f"timed_side.run_side('fake', [sys.executable, '-c', {CHILD!r}], __import__('pathlib').Path({str(log)!r}), "
        "budget_s=300.0, count_points=lambda: 0)"
    )
    comparison = subprocess.Popen([sys.executable, "-c", driver], start_new_session=True)
    deadline = time.monotonic() + 60
    while not (log.is_file() and log.read_text().split()) and time.monotonic() < deadline:
        time.sleep(0.2)
    side_pid = psutil.Process(comparison.pid).children()[0].pid
    grandchild = int(log.read_text().split()[0])
    comparison.send_signal(signal.SIGTERM)
    assert comparison.wait(timeout=120) != 0  # it stopped, and did not report a finished side

    def gone(pid):
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    assert gone(side_pid) and gone(grandchild)


def test_runs_of_several_seeds_are_summarized_with_paired_differences():
    import summarize_comparisons

    def results(seed, start, essa, grpo):
        points = [{"side": "start", "label": "warm start", "wall_s": 0.0, "reward": start}]
        points += [
            {"side": "essa", "label": f"generation {g}", "wall_s": 100.0 * g, "reward": r}
            for g, r in enumerate(essa, 1)
        ]
        points += [
            {"side": "grpo", "label": f"step {s}", "wall_s": 150.0 * s, "reward": r} for s, r in enumerate(grpo, 1)
        ]
        sides = {"essa": run(4.0), "grpo": run(3.0)}
        summary = compare_grpo.summarize(sides, [p for p in points if p["side"] != "start"], start)
        return {
            "start_reward": start,
            "points": points,
            "summary": summary["rows"],
            "settings": {"args": {"seed": seed}},
        }

    runs = [results(0, 0.5, [0.7, 0.6], [0.52, 0.55]), results(1, 0.4, [0.5, 0.45], [0.42, 0.44])]
    text = summarize_comparisons.table(runs)
    assert "| 0 | 0.500 | +0.100 | +0.200 (generation 1, 100 s) | +0.050 | +0.050 (step 2, 300 s) |" in text
    # final gains: essa 0.10, 0.05; GRPO 0.05, 0.04 -> paired differences 0.05 and 0.01, mean +0.030
    assert "gain at the final point over 2 runs" in text and "essa - GRPO paired by run +0.030 [" in text
    assert "gain at the best point over 2 runs" in text
    # one scored point per side (--points 1): "best" would be the final mean again, so no line claims a pick
    single = summarize_comparisons.table([results(0, 0.5, [0.7], [0.52]), results(1, 0.4, [0.5], [0.42])])
    assert "gain at the final point over 2 runs" in single and "gain at the best point" not in single


def test_essa_exported_point_is_its_final_and_paired_with_grpo_on_the_same_prompts():
    start = {"side": "start", "label": "warm start", "wall_s": 0.0, "reward": 0.5, "rewards": [0.5, 0.5, 0.5, 0.5]}
    points = [
        {
            "side": "essa",
            "label": "generation 30",
            "wall_s": 880.0,
            "generation": 30,
            "point": "mean",
            "reward": 0.45,
            "rewards": [0.4, 0.5, 0.4, 0.5],
        },
        {
            "side": "essa",
            "label": "exported (gen 8)",
            "wall_s": 880.0,
            "generation": 30,
            "point": "exported",
            "reward": 0.75,
            "rewards": [0.7, 0.8, 0.7, 0.8],
        },
        {
            "side": "grpo",
            "label": "step 19",
            "wall_s": 890.0,
            "step": 19,
            "reward": 0.55,
            "rewards": [0.5, 0.6, 0.5, 0.6],
        },
    ]
    summary = compare_grpo.summarize({"essa": run(4.0), "grpo": run(3.0)}, points, start=0.5)
    rows = {r["side"]: r for r in summary["rows"]}
    assert rows["essa"]["final"] == 0.75 and rows["essa"]["best"] == 0.5  # best: over the means only
    paired = compare_grpo.paired_finals(start, points, ["essa", "grpo"])
    assert (
        paired["essa - grpo"]["before_point"] == "step 19"
        and paired["essa - grpo"]["after_point"] == "exported (gen 8)"
    )
    assert abs(paired["essa - grpo"]["diff"] - 0.2) < 1e-9 and abs(paired["grpo - start"]["diff"] - 0.05) < 1e-9
    text = "\n".join(compare_grpo.describe_paired(paired))
    assert "essa - grpo (exported (gen 8) vs step 19): +0.2000" in text and "excludes 0" in text
    # the task's metric per prompt, paired the same way (Countdown: solved or not)
    for point, solved in zip([start, *points], ([0, 0, 1, 0], [0, 0, 1, 0], [1, 1, 1, 0], [0, 1, 1, 0])):
        point["headline"] = solved
    headline = compare_grpo.paired_finals(start, points, ["essa", "grpo"], key="headline")
    assert headline["essa - start"]["diff"] == 0.5 and headline["essa - grpo"]["diff"] == 0.25


def test_essa_validation_refuses_to_report_on_the_validation_split(capsys):
    code = compare_grpo.main(["--essa-validation", "32", "--split", "validation", "--budget-s", "1"])
    assert code == 2 and "add --split test" in capsys.readouterr().err


def test_the_essa_command_validates_only_when_asked():
    from types import SimpleNamespace

    cfg = SimpleNamespace(
        task=SimpleNamespace(name="gsm8k", data_dir=None, reward=None, batch_size=4),
        model=SimpleNamespace(name="m"),
        search=SimpleNamespace(popsize=6),
        generation=SimpleNamespace(max_new_tokens=8),
    )
    args = SimpleNamespace(seed=1, essa_arg=["search.sigma=1"], essa_validation=0, essa_validate_every=2)
    off = compare_grpo.essa_command(args, cfg, Path("warm"), Path("run"))
    assert "task.val_size=1" in off and off[-1] == "search.sigma=1"
    # λ and B come from the config the command-line values were applied to
    assert off[off.index("--popsize") + 1] == "6" and off[off.index("--batch-size") + 1] == "4"
    args.essa_validation = 32
    on = compare_grpo.essa_command(args, cfg, Path("warm"), Path("run"))
    assert "task.val_size=32" in on and "run.validate_every=2" in on and "task.val_size=1" not in on


def test_exported_points_are_tabled_with_the_time_their_generation_was_saved(tmp_path):
    import json
    import os

    import summarize_comparisons

    for gen, mtime in ((6, 1000.0 + 435.0), (19, 1000.0 + 877.0)):  # the run's clock started at 1000
        state = tmp_path / "essa" / "checkpoints" / f"gen_{gen:06d}" / "state.json"
        state.parent.mkdir(parents=True)
        state.write_text("{}")
        os.utime(state, (mtime, mtime))
    (tmp_path / "essa" / "calibration.json").write_text(json.dumps({"sigma": 2.0}))
    start = {"side": "start", "label": "warm start", "wall_s": 0.0, "reward": 0.5, "rewards": [0.5, 0.5, 0.5, 0.5]}
    points = [
        {
            "side": "essa",
            "label": "generation 19",
            "wall_s": 877.0,
            "generation": 19,
            "point": "mean",
            "reward": 0.45,
            "rewards": [0.4, 0.5, 0.4, 0.5],
        },
        {
            "side": "essa",
            "label": "exported (gen 6)",
            "wall_s": 877.0,
            "generation": 19,
            "best_generation": 6,
            "point": "exported",
            "reward": 0.75,
            "rewards": [0.7, 0.8, 0.7, 0.8],
        },
        {
            "side": "grpo",
            "label": "step 19",
            "wall_s": 890.0,
            "step": 19,
            "reward": 0.55,
            "rewards": [0.5, 0.6, 0.5, 0.6],
        },
    ]
    summary = compare_grpo.summarize({"essa": run(4.0), "grpo": run(3.0)}, points, 0.5)
    results = {
        "start_reward": 0.5,
        "points": [start] + points,
        "summary": summary["rows"],
        "settings": {"args": {"seed": 3}},
        "paired": compare_grpo.paired_finals(start, points, ["essa", "grpo"]),
    }
    assert abs(summarize_comparisons.exported_found_s(tmp_path, results) - 435.0) < 1e-6
    text = summarize_comparisons.exported_table([tmp_path], [results])
    assert "| 3 | 2 | 0.500 | +0.250 [" in text and "| 6 (435 s) |" in text and "| 19 generations / 19 steps |" in text
    # the per-run table: the exported point is essa's final; its best is over the scored means only
    assert "| 3 | 0.500 | +0.250 | -0.050 (generation 19, 877 s) |" in summarize_comparisons.table([results])


def test_the_tasks_own_metric_and_each_sides_work_are_summarized_per_run():
    import summarize_comparisons

    def results(seed: int, essa_solved: list[float], grpo_solved: list[float]) -> dict:
        start = {"side": "start", "label": "warm start", "wall_s": 0.0, "reward": 0.4, "headline": [0.0, 1.0, 0.0, 0.0]}
        points = [
            {
                "side": "essa",
                "label": "generation 8",
                "point": "mean",
                "wall_s": 590.0,
                "reward": 0.4,
                "headline": [0.0] * 4,
            },
            {
                "side": "essa",
                "label": "exported (gen 4)",
                "point": "exported",
                "wall_s": 590.0,
                "reward": 0.5,
                "headline": essa_solved,
            },
            {"side": "grpo", "label": "step 12", "wall_s": 580.0, "reward": 0.45, "headline": grpo_solved},
        ]
        return {
            "start_reward": 0.4,
            "headline_metric": "solved",
            "points": [start] + points,
            "paired_headline": compare_grpo.paired_finals(start, points, ["essa", "grpo"], key="headline"),
            "settings": {
                "args": {"seed": seed},
                "essa_command": ["essa", "--popsize", "32", "--batch-size", "8", "task.val_size=128"],
                "grpo": {"prompts_per_step": 4, "num_generations": 4},
            },
            "runs": {"essa": {"wall_s": 600.0}, "grpo": {"wall_s": 600.0}},
            "logs": {
                "essa_metrics": [
                    {"generation": -1, "validation": 0.4},
                    {
                        "generation": 0,
                        "tokens": 1000,
                        "time": {"apply": 1.0, "generate": 40.0, "ask_tell": 0.5, "total": 42.0},
                    },
                    {
                        "generation": 1,
                        "tokens": 1100,
                        "validation": 0.5,
                        "time": {"apply": 1.0, "generate": 41.0, "ask_tell": 0.5, "total": 43.0, "validate": 20.0},
                    },
                ],
                "grpo_logs": [{"step": s, "step_time": 40.0, "completions/mean_length": 50.0} for s in (1, 2, 3)],
            },
        }

    runs = [
        results(0, [1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]),
        results(1, [1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]),
    ]
    text = summarize_comparisons.headline_table(runs)
    # seed 0: start 25%, essa 50%, GRPO 25%: essa - start +25 points, GRPO - start +0, essa - GRPO +25
    assert "| 0 | 25.0% | 50.0% | 25.0% | +25.0 [" in text and "| +0.0 [+0.0, +0.0] |" in text
    # over the runs: essa - start +25 and +50 -> mean +37.5; essa - GRPO +25 and +25 -> +25.0 [+25.0, +25.0]
    assert (
        "solved, points, over 2 runs" in text
        and "essa - start +37.5 [" in text
        and "essa - grpo +25.0 [+25.0, +25.0]" in text
    )

    essa, grpo = (summarize_comparisons.work(runs[0])[s] for s in ("essa", "grpo"))
    assert essa["steps"] == 2 and essa["completions"] == 2 * 32 * 8 and essa["tokens"] == 2100
    assert essa["validation_completions"] == 3 * 128  # one validation, and the start's (warm start and base)
    assert essa["generate_s"] == 81.0 and essa["update_s"] == 3.0 and essa["validate_s"] == 20.0
    assert essa["other_s"] == 600.0 - 85.0 - 20.0
    assert grpo["steps"] == 3 and grpo["completions"] == 48 and grpo["tokens"] == 2400 and grpo["other_s"] == 480.0
    assert "| 0 | essa | 2 | 512 (+ 384) | 2100 |" in summarize_comparisons.work_table(runs)
    # without the metric per prompt (a run scored before it was recorded) there is no such table
    assert summarize_comparisons.headline_table([{k: v for k, v in runs[0].items() if k != "paired_headline"}]) == ""


def test_essas_points_are_its_last_mean_and_its_exported_best_point(tmp_path):
    """On a real run folder (a FakePool run): the mean of the last checkpoint within the budget, and the
    best validated point as essa export writes it, labelled with its generation."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "essa"))
    from fake_pool import tiny_run

    from essa.model.adapters import read_peft_adapter
    from essa.run.checkpoint import load_latest

    run, _ = tiny_run(tmp_path, "search.generations=4", "run.checkpoint_every=1")
    best = load_latest(run).best
    points = compare_grpo.essa_points(run, time.time() - 100, 1e6, 1, tmp_path / "means", exported=True)
    mean, exported = points
    assert mean["point"] == "mean" and mean["generation"] == 4 and 0 < mean["wall_s"] < 1e3
    assert exported["point"] == "exported" and exported["best_generation"] == best.generation
    assert exported["label"] == f"exported (gen {best.generation})" and exported["validation"] == best.validation
    lora, config = read_peft_adapter(Path(exported["adapter"]))
    assert int(config["r"]) == 2 and lora


def test_rescore_reopens_the_sides_a_comparison_left(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "essa"))
    from fake_pool import tiny_config, tiny_run

    run, model = tiny_run(tmp_path / "src")
    out = tmp_path / "cmp"
    (out / "warm_start").mkdir(parents=True)
    for f in (run / "warm_start").iterdir():
        (out / "warm_start" / f.name).write_bytes(f.read_bytes())
    (out / "config.yaml").write_text("task: {}\n")
    record = {"t0": 1000.0, "wall_s": 601.2, "peak_rss": 4.5 * timed_side.GIB, "stopped_by_budget": True}
    compare_grpo.save_side(out, "essa", record)
    args = compare_grpo.build_parser().parse_args(
        ["--task", "gsm8k", "--sides", "essa", "--rescore", "--out", str(out)]
    )
    cfg = tiny_config(model)
    warm, rank, alpha, sides, essa_cmd, grpo_settings = compare_grpo.reopen_sides(args, cfg, out)
    assert warm == out / "warm_start" and rank == 2 and sides == {"essa": record} and grpo_settings is None
    assert str(out / "essa") in essa_cmd and cfg.adapter.init == str(warm)
    args.sides = ["essa", "grpo"]
    with pytest.raises(compare_grpo.UserError, match="grpo.side.json not found"):
        compare_grpo.reopen_sides(args, cfg, out)
    with pytest.raises(compare_grpo.UserError, match="holds no comparison"):
        compare_grpo.reopen_sides(args, cfg, tmp_path / "empty")
