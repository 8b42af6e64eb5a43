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
