"""A SIGTERM at any moment of `essa align`'s start-up (checks, run folder, warm start, Ray's start,
the engines' start) unwinds the same way: the "interrupted" line, exit status 143, and no process
of the command left running. Ray's own driver handler (sys.exit(15) while ray.init runs) and a head
stopped half-way through its start are the moments this guards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

DELAYS_S = (1.0, 2.5, 4.0, 5.5, 7.0, 9.0, 11.0, 14.0, 18.0)  # from launch; the start takes about 20-40 s


def descendants(pid: int) -> dict[int, str]:
    try:
        return {p.pid: p.name() for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def alive(pids: dict[int, str]) -> list[str]:
    left = []
    for pid, name in pids.items():
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE and process.name() == name:
                left.append(f"{name} (pid {pid})")
        except psutil.Error:
            pass
    return left


@pytest.mark.ray
@pytest.mark.e2e
def test_sigterm_during_start_up_always_unwinds(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    results = []
    for k, delay in enumerate(DELAYS_S):
        run = tmp_path / f"run{k}"
        argv = [sys.executable, "-m", "essa.cli", "align", "--task", "countdown", "--gpus", "0"]
        argv += ["--run-dir", str(run), "--generations", "1", "--popsize", "2", "--batch-size", "2"]
        argv += ["adapter.init=principal", "task.val_size=2", "generation.max_new_tokens=8"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        seen: dict[int, str] = {}
        started = time.monotonic()
        while time.monotonic() - started < delay and proc.poll() is None:
            seen |= descendants(proc.pid)
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"the command ended before {delay} s: {proc.stderr.read()[-2000:]}")
        seen |= descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        deadline = time.monotonic() + 15
        while alive(seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = alive(seen)
        for pid in seen:  # clean up before failing, so that one failure does not spoil the next tries
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        results.append((delay, proc.returncode, left, err))
        assert proc.returncode == 128 + signal.SIGTERM, f"after {delay} s: exit {proc.returncode}\n{err[-3000:]}"
        assert "interrupted (SIGTERM)" in err, f"after {delay} s:\n{err[-3000:]}"
        assert "Traceback" not in err.split("interrupted (SIGTERM)")[-1], err[-3000:]
        assert not left, f"after {delay} s these processes outlived the command: {left}"
        assert not Path(run).exists() or (Path(run) / "config.yaml").is_file()  # gone, or a resumable run
    print("\n".join(f"SIGTERM after {d:4.1f} s: exit {rc}, left {left}" for d, rc, left, _ in results))
