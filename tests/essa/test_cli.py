"""The CLI turns user mistakes into one clear line and exit status 2, before any engine starts."""

from __future__ import annotations

import pytest

from essa.cli import main


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["align"], "needs --task"),
        (["align", "--task", "gsm8k", "--data", "{tmp}/p.jsonl"], "cannot be combined"),
        (["align", "--data", "{tmp}/p.jsonl", "--run-dir", "{tmp}/r3"], "needs --data FILE.jsonl and --reward"),
        (["align", "--task", "gsm8k", "--reward", "{tmp}/none.py:f", "--run-dir", "{tmp}/r4"], "file not found"),
        (["align", "--task", "gsm8k", "search.popsiz=3"], "unknown config key 'search.popsiz'"),
        (["align", "--task", "gsm8k", "--popsize", "1"], "search.popsize=1"),
        (["align", "--task", "nosuchtask", "--run-dir", "{tmp}/r"], "unknown task 'nosuchtask'"),
        (["align", "--resume", "{tmp}/missing"], "not an essa run directory"),
        (["sft"], "essa sft needs --task"),
        (["sft", "--task", "gsm8k", "--data", "{tmp}/p.jsonl"], "cannot be combined"),
        (["sft", "--task", "ifeval", "task.few_shot=2"], "ifeval has no reference solutions"),
        (["sft", "--task", "gsm8k", "sft.learning_rate=0"], "sft.learning_rate=0"),
        (["align", "--resume", "{tmp}/missing", "--task", "gsm8k"], "drop --task and --config"),
        (["align", "--task", "gsm8k", "--config", "{tmp}/nope.yaml"], "config file not found"),
        (["export", "{tmp}/missing", "--out", "{tmp}/out"], "not an essa run directory"),
        (["eval", "--task", "gsm8k", "--limit", "0"], "--limit 0"),
        (["eval", "--task", "gsm8k", "--limit", "-3"], "--limit -3"),
        (["align", "--task", "gsm8k", "--model", "{tmp}/no-model", "--run-dir", "{tmp}/r2"], "unknown model"),
    ],
)
def test_user_errors_exit_2_with_a_message(argv, expected, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("essa: error:") and expected in err


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("search:\n  popsize: 4\n")
    assert main(["align", "--task", "gsm8k", "--run-dir", str(run)]) == 2
    assert "essa align --resume" in capsys.readouterr().err


def test_eval_table_shows_rates_in_percent_and_every_key():
    from essa.report.evaluate import format_table

    table = format_table(
        {
            "task": "ifeval",
            "prompt_level_strict_acc": 0.26,
            "accuracy": 0.355,
            "stderr": 0.0123,
            "adapter": None,
            "mean_new_tokens": 211.456,
            "examples": 200,
        }
    )
    lines = dict(line.split(None, 1) for line in table.splitlines())
    assert lines == {
        "task": "ifeval",
        "prompt_level_strict_acc": "26.00%",
        "accuracy": "35.50%",
        "stderr": "1.23%",
        "adapter": "-",
        "mean_new_tokens": "211.5",
        "examples": "200",
    }


def test_more_gpus_than_this_machine_has_is_refused_before_the_run_folder_exists(tmp_path, capsys, monkeypatch):
    from ray._private.accelerators import NvidiaGPUAcceleratorManager

    monkeypatch.setattr(NvidiaGPUAcceleratorManager, "get_current_node_num_accelerators", staticmethod(lambda: 2))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run = tmp_path / "run"
    assert main(["align", "--task", "gsm8k", "--gpus", "4", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--gpus 4 asks for 4 GPUs but this machine has 2; use --gpus 2" in err
    assert not run.exists()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # Ray counts only the visible ones
    assert main(["align", "--task", "gsm8k", "--gpus", "2", "--run-dir", str(run)]) == 2
    assert "this machine has 1" in capsys.readouterr().err and not run.exists()


def test_a_connection_error_is_not_described_as_a_disk_problem():
    from essa.cli import describe_os_error

    text = describe_os_error(ConnectionError("Could not find any running Ray instance.\nmore"))
    assert text == "ConnectionError: Could not find any running Ray instance."
    assert "atomic" in describe_os_error(OSError(28, "No space left on device", "/runs/x/metrics.jsonl"))


def test_a_failed_start_leaves_no_default_run_folder_behind(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["align", "--task", "gsm8k", "--reward", "missing.py:score"]) == 2
    assert "file not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before runs/ or a run folder is made
