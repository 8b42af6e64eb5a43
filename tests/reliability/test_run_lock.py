"""One writer per run directory; default run directories never collide."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from essa.config import load_config
from essa.run.run_dir import RunInUseError, hold_run, new_run_dir


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    with hold_run(tmp_path / "run"):
        with pytest.raises(RunInUseError, match=f"pid {os.getpid()} on host"):
            with hold_run(tmp_path / "run"):
                pass
    with hold_run(tmp_path / "run"):  # released on exit
        pass


def test_the_lock_dies_with_its_process(tmp_path):
    """A killed run never blocks its own resume: the kernel releases the lock."""
    code = (
        "import os, sys; from pathlib import Path; from essa.run.run_dir import hold_run\n"
        f"with hold_run(Path({str(tmp_path / 'run')!r})):\n    print('held', flush=True); os._exit(9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "held" and proc.returncode == 9
    with hold_run(tmp_path / "run"):
        pass


def test_align_on_a_held_run_exits_2_naming_the_holder(tmp_path, capsys):
    from essa.cli import main

    run = tmp_path / "run"
    with hold_run(run):
        assert main(["align", "--task", "gsm8k", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "is in use by pid" in err and "--resume" in err


def test_default_run_directories_are_distinct(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("gsm8k", None, {}, [])
    made = {new_run_dir(cfg) for _ in range(20)}  # the same second, twenty runs
    assert len(made) == 20 and all(p.is_dir() for p in made)


def test_a_run_folder_made_for_a_run_that_never_started_is_taken_away(tmp_path):
    from essa.run.run_dir import hold_run

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        with hold_run(fresh):
            raise RuntimeError("bad task")  # setup failed before anything was written
    assert not fresh.exists()

    existing = tmp_path / "existing"  # a folder the user made stays, lock file or not
    existing.mkdir()
    with hold_run(existing):
        pass
    assert existing.is_dir()

    started = tmp_path / "started"  # a run that wrote something keeps everything
    with hold_run(started):
        (started / "config.yaml").write_text("search: {}\n")
    assert (started / "config.yaml").is_file()
