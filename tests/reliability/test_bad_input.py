"""Bad input is refused before anything starts, in one line that names the problem and its fix
(exit status 2), and nothing is left behind: no run folder, no folder outside it, no stray files.

Every case here is refused before Ray or an engine starts; a regression that let one through
would start engines, which the `nothing_made` checks and the messages would then fail on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from essa.cli import main
from essa.model.provision import resolve_model

HERE = Path(__file__).resolve().parent


def refused(argv: list[str], capsys) -> str:
    """Run the CLI, assert exit status 2 with one `essa: error:` line, and return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("essa: error:"), err[-2000:]
    assert "Traceback" not in err
    return err


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working folder, inside an empty parent, for a command that must create nothing."""
    here = tmp_path / "parent" / "cwd"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    return here


def nothing_made(workdir: Path, *kept: str) -> None:
    assert sorted(p.name for p in workdir.parent.iterdir()) == ["cwd"]
    assert sorted(p.name for p in workdir.iterdir()) == sorted(kept)


@pytest.mark.parametrize("task", ["../../etc/passwd", "/some/abs/x", "a/b"])
def test_a_task_name_is_never_used_as_a_path(task, workdir, capsys):
    err = refused(["align", "--task", task, "--gpus", "0"], capsys)
    assert f"unknown task {task!r}" in err and "countdown" in err
    nothing_made(workdir)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("generation.temperature=-1", "generation.temperature=-1.0 must be a finite number >= 0"),
        ("generation.temperature=nan", "generation.temperature=nan must be a finite number >= 0"),
        ("model.max_model_len=10", "model.max_model_len=10 must be >= 64"),
        ("task.name=gsm8k", "--task countdown and task.name=gsm8k disagree"),
        ("search=3", "search is a section, not a value"),
    ],
)
def test_values_only_an_engine_would_reject_are_refused_first(override, expected, workdir, capsys):
    assert expected in refused(["align", "--task", "countdown", "--gpus", "0", override], capsys)
    nothing_made(workdir)


def test_a_token_budget_beyond_the_context_is_refused(workdir, capsys):
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--max-new-tokens", "100000"], capsys)
    assert "generation.max_new_tokens=100000 (--max-new-tokens) leaves no room" in err
    assert "model.max_model_len=1024" in err
    nothing_made(workdir)


def test_sizes_above_the_split_they_draw_from(workdir, capsys):
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--batch-size", "5000"], capsys)
    assert "task.batch_size=5000 (--batch-size) is more than the 2000 train prompts" in err
    nothing_made(workdir)


def test_a_validation_size_above_its_split_is_lowered_and_said(capsys):
    from essa.config import load_config
    from essa.rewards.task import load_task
    from essa.run.preflight import check_sizes

    cfg = load_config("math500", None, {}, ["task.val_size=1000", "run.heldout_size=5000"])
    check_sizes(cfg, load_task(cfg.task))
    out = capsys.readouterr().out
    assert cfg.task.val_size == 100 and "task.val_size=1000: the validation split has 100 prompts" in out
    assert cfg.run.heldout_size == 100 and "run.heldout_size=5000: the test split has 100 prompts" in out


def embedded_model_copy(folder: Path) -> Path:
    shutil.copytree(resolve_model("smollm2-135m-instruct"), folder)
    return folder


def test_a_model_with_an_empty_weight_file_is_named(workdir, tmp_path, capsys):
    model = embedded_model_copy(tmp_path / "model")
    (model / "model.safetensors").write_bytes(b"")
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--model", str(model)], capsys)
    assert f"{model / 'model.safetensors'} is damaged: 0 bytes, too short for its header" in err
    nothing_made(workdir)


def test_a_model_with_a_truncated_weight_file_is_named(workdir, tmp_path, capsys):
    model = embedded_model_copy(tmp_path / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--model", str(model)], capsys)
    assert "model.safetensors is damaged: a header length past its end" in err
    nothing_made(workdir)


@pytest.mark.parametrize("config", ["[1, 2]", '"text"'])
def test_a_model_config_that_is_not_one_is_named(config, workdir, tmp_path, capsys):
    model = embedded_model_copy(tmp_path / "model")
    (model / "config.json").write_text(config)
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--model", str(model)], capsys)
    assert "config.json is not a JSON object" in err
    nothing_made(workdir)


def test_a_max_model_len_above_the_models_context_is_refused(workdir, tmp_path, capsys):
    model = embedded_model_copy(tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = 512
    (model / "config.json").write_text(json.dumps(config))
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--model", str(model)], capsys)
    assert "model.max_model_len=1024 is more than the model's context of 512 tokens" in err
    nothing_made(workdir)


ROWS = "".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(30))


@pytest.mark.parametrize(
    "content, expected",
    [
        (b'{"prompt": 1}\n{"prompt": 2}\n{"prompt": 3}\n', "row 1 (not counting blank lines): 'prompt' holds int '1'"),
        (b'{"prompt": ""}\n{"prompt": " "}\n{"prompt": "x"}\n', "'prompt' holds empty text"),
        (b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', "data.jsonl:2: not UTF-8 (byte 0xe9 at column 16)"),
        (b'{"prompt": "ok"}\n{"prompt": ok}\n', "data.jsonl:2: not valid JSON"),
        (("x " * 200_000).join(['{"prompt": "', '"}\n']).encode() + ROWS.encode(), "takes 400,000 characters"),
    ],
    ids=["integers", "empty", "latin-1", "json", "one-huge-prompt"],
)
def test_a_bad_data_file_is_named_with_its_line(content, expected, workdir, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    reward = tmp_path / "reward.py"
    reward.write_text("def score(completion, example):\n    return 1.0\n")
    err = refused(["align", "--data", str(data), "--reward", f"{reward}:score", "--gpus", "0"], capsys)
    assert expected in err
    nothing_made(workdir)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--prompt-field", ""], "--prompt-field is empty"),
        (["--data", "{tmp}"], "is a folder; name the JSONL file in it"),
    ],
)
def test_data_flags_that_name_nothing_usable(flags, expected, workdir, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text(ROWS)
    (tmp_path / "reward.py").write_text("def score(completion, example):\n    return 1.0\n")
    argv = ["align", "--data", str(data), "--reward", f"{tmp_path / 'reward.py'}:score", "--gpus", "0"]
    argv += [f.replace("{tmp}", str(tmp_path)) for f in flags]
    assert expected in refused(argv, capsys)
    nothing_made(workdir)


def test_a_config_folder_is_not_a_config_file(workdir, tmp_path, capsys):
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--config", str(tmp_path)], capsys)
    assert "is a folder; name a YAML file" in err


PLUGINS = {
    "exits": ("import sys\nsys.exit(0)\n", "it called sys.exit(0) while being imported"),
    "exits-with-text": ("import sys\nsys.exit('bye')\n", "it called sys.exit('bye') while being imported"),
    "interrupts": ("raise KeyboardInterrupt\n", "KeyboardInterrupt while it was imported"),
    "one-argument": ("def score(completion):\n    return 1.0\n", "score() takes 1 positional argument but 2"),
    "returns-text": ("def score(completion, example):\n    return 'yes'\n", "returned 'yes', not a finite number"),
    "returns-nan": ("def score(completion, example):\n    return float('nan')\n", "returned nan, not a finite"),
    "raises": ("def score(completion, example):\n    return example['nope']\n", "KeyError: 'nope'"),
    "exits-when-called": ("import sys\ndef score(c, e):\n    sys.exit(3)\n", "raised SystemExit (3)"),
    "trl-returns-one-number": (
        "def score(completions, **kwargs):\n    return 1.0\n",
        "TypeError: 'float' object is not iterable",
    ),
}


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_a_reward_plugin_that_fails_is_named_before_anything_starts(name, workdir, tmp_path, capsys):
    source, expected = PLUGINS[name]
    plugin = tmp_path / f"{name.replace('-', '_')}.py"
    plugin.write_text(source + ("def score(completion, example):\n    return 1.0\n" if "def " not in source else ""))
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--reward", f"{plugin}:score"], capsys)
    assert str(plugin) in err and expected in err
    nothing_made(workdir)


def test_a_trl_reward_and_a_plain_reward_pass_the_trial_call():
    from essa.config import load_config
    from essa.rewards.task import load_task
    from essa.run.preflight import try_reward

    for spec in ("essa.rewards.countdown:partial_credit", None):
        cfg = load_config("countdown", None, {}, [f"task.reward={spec}"] if spec else [])
        assert try_reward(load_task(cfg.task)) == 1.0  # the reference solution of the first train example


def test_run_dir_holding_a_users_files_is_refused_and_untouched(workdir, capsys):
    notes = workdir / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--run-dir", str(notes)], capsys)
    assert "already holds files that are not an essa run (notes.txt)" in err
    assert [p.name for p in notes.iterdir()] == ["notes.txt"]
    err = refused(["align", "--task", "countdown", "--gpus", "0", "--run-dir", str(notes / "notes.txt")], capsys)
    assert "is a file, not a folder" in err
    nothing_made(workdir, "notes")


def copied_run(straight: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(straight, run, ignore=shutil.ignore_patterns("tensorboard", ".lock"))
    return run


@pytest.mark.parametrize(
    "verb", [["status"], ["export", "--out", "{tmp}/out"], ["plot"], ["align", "--resume"]], ids=lambda v: v[0]
)
def test_a_damaged_config_yaml_is_one_line_in_every_verb(verb, straight, tmp_path, capsys):
    run = copied_run(straight, tmp_path)
    with open(run / "config.yaml", "a") as f:
        f.write("a: [b\n")
    argv = [v.replace("{tmp}", str(tmp_path)) for v in verb]
    argv = argv[:1] + ([str(run)] if argv[0] != "align" else []) + argv[1:] + ([str(run)] if argv[0] == "align" else [])
    err = refused(argv, capsys)
    assert f"{run / 'config.yaml'} is damaged" in err and "restore it" in err
    assert not (tmp_path / "out").exists()


def test_status_trusts_the_checkpoint_over_a_truncated_log_and_prints_real_paths(straight, tmp_path, capsys):
    run = copied_run(straight, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:3]))
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    total = json.loads(lines[-1])["generation"] + 1
    kept = sum(json.loads(line)["generation"] >= 0 for line in lines[:3])
    assert re.search(rf"^generation +{total} of {total}$", out, re.M)
    assert re.search(rf"^metrics.jsonl +holds only {kept} of them: lines were lost", out, re.M)
    assert "RUN_DIR" not in out and re.search(rf"^exported adapter +{re.escape(str(run / 'adapter'))}$", out, re.M)


def test_a_failed_folder_swap_leaves_nothing_beside_the_target(tmp_path, monkeypatch):
    from essa.model import adapters

    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    new.mkdir()
    (new / "x").write_text("new")
    real_rename = Path.rename

    def immutable(self, to):
        if self == target:
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", immutable)
    with pytest.raises(PermissionError):
        adapters.replace_dir(new, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]  # no .out.XXXX.old folder


def test_a_failed_put_back_keeps_the_earlier_export(tmp_path, monkeypatch, capsys):
    from essa.model import adapters

    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    (target / "earlier").write_text("mine")
    new.mkdir()
    real_rename = Path.rename

    def fails_into_target(self, to):
        if Path(to) == target:
            raise OSError(5, "Input/output error", str(to))
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", fails_into_target)
    with pytest.raises(OSError):
        adapters.replace_dir(new, target)
    (kept,) = tmp_path.glob(".out.*.old")
    assert (kept / "out" / "earlier").read_text() == "mine" and "could not be put back" in capsys.readouterr().err


def test_no_test_here_left_a_process_behind():
    """Every case above was refused before Ray: no raylet or gcs_server is a child of this process."""
    import psutil

    names = {child.name() for child in psutil.Process(os.getpid()).children(recursive=True)}
    assert not names & {"raylet", "gcs_server"}


@pytest.mark.parametrize(
    "argv, expected, unexpected",
    [
        (["--generations", "0"], "search.generations=0 (--generations) must be >= 1", None),
        (["task.batch_size=0"], "task.batch_size=0 (--batch-size) must be >= 1", "task.val_size"),
        (["run.validate_every=0"], "run.validate_every=0 must be >= 1", "run.checkpoint_every"),
    ],
)
def test_a_zero_size_names_only_its_own_key(argv, expected, unexpected, workdir, capsys):
    err = refused(["align", "--task", "countdown", "--gpus", "0", *argv], capsys)
    assert expected in err and (unexpected is None or unexpected not in err)
    nothing_made(workdir)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--out", ""], "--out is empty"),
        (["--out", "{tmp}/out", "--public"], "--public goes with --push-to-hub REPO"),
        (["--out", "{tmp}/link"], "is a symbolic link (to "),
    ],
)
def test_export_flags_that_would_surprise(extra, expected, straight, tmp_path, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    argv = ["export", str(straight), *[e.replace("{tmp}", str(tmp_path)) for e in extra]]
    assert expected in refused(argv, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"] and not any((tmp_path / "real").iterdir())


def test_a_run_folder_stands_for_its_export(straight, tmp_path, capsys):
    from essa.cli import run_export

    assert run_export(straight, "--adapter") == straight / "adapter"
    assert "is a run folder: using its exported adapter" in capsys.readouterr().out
    assert run_export(straight / "adapter", "--adapter") == straight / "adapter"
    unexported = copied_run(straight, tmp_path)
    shutil.rmtree(unexported / "adapter")
    with pytest.raises(ValueError, match="is a run folder without an exported adapter yet: run essa export"):
        run_export(unexported, "--init")


def test_eval_refuses_a_metrics_folder_before_it_evaluates(tmp_path, capsys):
    err = refused(["eval", "--task", "countdown", "--out", str(tmp_path)], capsys)
    assert "name a file for the metrics (JSON), not a folder" in err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["engine.kv_cache_gib=0"], "engine.kv_cache_gib=0.0 must be > 0"),
        (["engine.gpu_memory_utilization=2"], "engine.gpu_memory_utilization=2.0 must be in (0, 1]"),
        (["--run-dir", ""], "run.run_dir (--run-dir) is empty"),
        (["--model", ""], "--model is empty"),
        (["adapter.target_modules=[qproj]", "--init", "principal"], "adapter.target_modules: qproj not among"),
        (["--init", "{tmp}"], "LoRA adapter config not found"),
        (["--reward", ":score"], "names no module or file before the colon"),
        (["--reward", "{tmp}/folder.py:score"], "folder.py is a folder; name the Python file"),
        (["--config", "{tmp}/binary.yaml"], "is not a text (UTF-8) file"),
    ],
)
def test_further_cases_found_by_trying(argv, expected, workdir, tmp_path, capsys):
    (tmp_path / "folder.py").mkdir()
    (tmp_path / "binary.yaml").write_bytes(b"a: 1\n\xd0\xff\xfe\n")
    argv = ["align", "--task", "countdown", "--gpus", "0", *[a.replace("{tmp}", str(tmp_path)) for a in argv]]
    assert expected in refused(argv, capsys)
    nothing_made(workdir)


def test_a_byte_order_mark_is_read_as_utf8(tmp_path):
    from essa.rewards.data import read_jsonl

    data = tmp_path / "bom.jsonl"
    data.write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\n{"prompt": "b"}\n')
    assert [row["prompt"] for row in read_jsonl(data, required=("prompt",))] == ["a", "b"]


def test_an_os_error_on_export_is_told_with_its_path_and_fix(straight, capsys):
    """/proc takes no new files (ENOENT): the operating system's error, told with its path and a fix."""
    assert main(["export", str(straight), "--out", "/proc/essa-export-test"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("essa: error: No such file or directory (/proc/") and "check the path" in err
    assert "Traceback" not in err


def test_with_reward_errors_zero_a_failing_trial_call_is_a_warning(tmp_path, capsys):
    from essa.config import load_config
    from essa.rewards.task import load_task
    from essa.run.preflight import try_reward

    plugin = tmp_path / "fails.py"
    plugin.write_text("def score(completion, example):\n    raise ValueError('unparsable')\n")
    cfg = load_config("countdown", None, {"task.reward": f"{plugin}:score"}, ["task.reward_errors=zero"])
    assert try_reward(load_task(cfg.task), warn_only=True) is None
    assert "failed on its trial call (ValueError: unparsable); task.reward_errors=zero" in capsys.readouterr().err
