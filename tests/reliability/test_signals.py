"""SIGTERM ends essa like Ctrl-C: cleanup runs and the exit code says which signal it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

CODE = """
import sys, time
import essa.cli as cli
def slow(args):
    try:
        print('working', flush=True)
        time.sleep(60)
    finally:
        print('cleaned up', flush=True)
cli.cmd_eval = slow
sys.exit(cli.main(['eval', '--task', 'gsm8k']))
"""


def test_sigterm_unwinds_and_exits_143():
    proc = subprocess.Popen([sys.executable, "-c", CODE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "working"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "cleaned up" in out and "interrupted (SIGTERM)" in err


RAY_CODE = """
import signal, sys
import essa.cli as cli
from essa.workers.placement import init_ray
def after_ray(args):
    init_ray(None)
    try:
        print('ray up', flush=True)
        signal.pause()
    finally:
        import ray
        ray.shutdown()
        print('ray down', flush=True)
cli.cmd_eval = after_ray
sys.exit(cli.main(['eval', '--task', 'gsm8k']))
"""


@pytest.mark.ray
def test_sigterm_still_unwinds_after_ray_starts():
    """Ray's driver installs its own SIGTERM handler, which ends the process without cleanup."""
    proc = subprocess.Popen([sys.executable, "-c", RAY_CODE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ray up"
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "ray down" in out and proc.returncode == 128 + signal.SIGTERM, err[-2000:]


HEAD_LOST_CODE = """
import signal, sys
import essa.cli as cli
from essa.workers.placement import init_ray
def after_ray(args):
    init_ray(None)
    import ray
    from ray._private import ray_constants, worker
    gcs = worker._global_node.all_processes[ray_constants.PROCESS_TYPE_GCS_SERVER][0].process
    try:
        print('ray up', gcs.pid, flush=True)
        signal.pause()
    finally:
        ray.shutdown()
        print('ray down', flush=True)
cli.cmd_eval = after_ray
sys.exit(cli.main(['eval', '--task', 'gsm8k']))
"""


@pytest.mark.ray
def test_a_lost_ray_head_is_named_and_the_command_unwinds():
    """Ray itself waits 60 s for a lost GCS, then ends the process without cleanup; essa sees it within
    seconds, says so, and unwinds (its `finally` blocks run), exit status 1."""
    proc = subprocess.Popen([sys.executable, "-c", HEAD_LOST_CODE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        *words, gcs_pid = proc.stdout.readline().split()
        assert words == ["ray", "up"]
        started = time.monotonic()
        os.kill(int(gcs_pid), signal.SIGKILL)
        out, err = proc.communicate(timeout=55)  # inside Ray's own 60 s
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-2000:]
    assert "the Ray head of this command is gone: its gcs_server process" in err
    assert "essa align --resume RUN_DIR" in err and "interrupted" not in err
    assert "ray down" in out and time.monotonic() - started < 55
