"""A SIGTERM at any moment of `essa align`'s start-up (checks, run folder, warm start, Ray's start,
the engines' start) unwinds the same way: the "interrupted" line, exit status 143, and no process
of the command left running. Ray's own driver handler (sys.exit(15) while ray.init runs) and a head
stopped half-way through its start are the moments this guards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

# When to send SIGTERM: seconds after launch (the checks, the warm start), or after the line the
# command prints just before it starts Ray ("warm start: ..."): Ray's start (a few seconds), the
# actor's, the engine's. Timing differs between machines; anchoring on the line keeps these moments.
MOMENTS = (
    ("launch", 1.0),
    ("launch", 3.0),
    ("ray", 0.0),
    ("ray", 0.3),
    ("ray", 0.7),
    ("ray", 1.2),
    ("ray", 2.0),
    ("ray", 4.0),
    ("ray", 8.0),
)
BEFORE_RAY = "[essa] warm start:"


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
    for k, (anchor, delay) in enumerate(MOMENTS):
        run = tmp_path / f"run{k}"
        argv = [sys.executable, "-m", "essa.cli", "align", "--task", "countdown", "--gpus", "0"]
        argv += ["--run-dir", str(run), "--generations", "1", "--popsize", "2", "--batch-size", "2"]
        argv += ["adapter.init=principal", "task.val_size=2", "generation.max_new_tokens=8"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        lines: list[str] = []
        readers = [threading.Thread(target=lines.extend, args=(f,), daemon=True) for f in (proc.stdout, proc.stderr)]
        for reader in readers:
            reader.start()
        seen: dict[int, str] = {}
        started = time.monotonic()
        while anchor == "ray" and not any(BEFORE_RAY in line for line in lines):
            seen |= descendants(proc.pid)
            if proc.poll() is not None or time.monotonic() - started > 300:
                pytest.fail(f"no {BEFORE_RAY!r} line: {''.join(lines)[-2000:]}")
            time.sleep(0.02)
        started = time.monotonic()
        while time.monotonic() - started < delay and proc.poll() is None:
            seen |= descendants(proc.pid)
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"the command ended before {anchor} + {delay} s: {''.join(lines)[-2000:]}")
        seen |= descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        finally:
            proc.kill()
        for reader in readers:
            reader.join(timeout=10)
        err = "".join(lines)
        deadline = time.monotonic() + 15
        while alive(seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = alive(seen)
        for pid in seen:  # clean up before failing, so that one failure does not spoil the next tries
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        results.append((f"{anchor} + {delay}", proc.returncode, left, err))
        assert proc.returncode == 128 + signal.SIGTERM, (
            f"at {anchor} + {delay} s: exit {proc.returncode}\n{err[-3000:]}"
        )
        assert "interrupted (SIGTERM)" in err, f"at {anchor} + {delay} s:\n{err[-3000:]}"
        assert "Traceback" not in err.split("interrupted (SIGTERM)")[-1], err[-3000:]
        assert not left, f"at {anchor} + {delay} s these processes outlived the command: {left}"
    print("\n".join(f"SIGTERM at {moment} s: exit {rc}, left {left}" for moment, rc, left, _ in results))
