"""Signals and the Ray head: SIGTERM ends essa like Ctrl-C (cleanup runs, the exit code says which
signal), a lost local Ray head is named and the command unwinds, and a local start never joins a
`ray start` cluster by accident."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CODE = """
import sys, time
import essa.cli as cli
def slow(args):
    try:
        print('working', flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        if REWRAP:
            raise KeyboardInterrupt()  # as Ray's waits do: the signal number is lost
        raise
    finally:
        print('cleaned up', flush=True)
cli.cmd_eval = slow
sys.exit(cli.main(['eval', '--task', 'gsm8k']))
"""


NESTED = """
import ctypes, signal, sys
import essa.cli as cli
def interrupted(args):
    # the signal landed inside a nested PyRun_* call (an extension's import runs code this way):
    # CPython notes that KeyboardInterrupt and, under python -m, would end the process by SIGINT
    ctypes.pythonapi.PyRun_SimpleString(b"raise KeyboardInterrupt")
    raise KeyboardInterrupt(signal.SIGTERM)
cli.cmd_eval = interrupted
sys.exit(cli.main(["eval", "--task", "gsm8k"]))
"""


def test_an_interrupt_inside_nested_python_still_exits_143(tmp_path):
    (tmp_path / "nested_interrupt.py").write_text(NESTED)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-m", "nested_interrupt"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert "interrupted (SIGTERM)" in proc.stderr


@pytest.mark.parametrize("rewrap", [False, True], ids=["plain", "re-raised-without-signal"])
def test_sigterm_unwinds_and_exits_143(rewrap):
    code = f"REWRAP = {rewrap}\n{CODE}"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "working"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "cleaned up" in out and "interrupted (SIGTERM)" in err


RAY_CODE = """
import signal, sys
import essa.cli as cli
from essa.workers.ray_start import init_ray
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


def start_ray_command() -> tuple[subprocess.Popen, int]:
    """`essa eval` with its command replaced by: start a local Ray, wait; returns it and its GCS pid."""
    proc = subprocess.Popen([sys.executable, "-c", RAY_CODE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    *words, gcs_pid = proc.stdout.readline().split()
    assert words == ["ray", "up"], proc.stderr.read()[-2000:] if proc.poll() is not None else words
    return proc, int(gcs_pid)


@pytest.mark.ray
def test_sigterm_still_unwinds_after_ray_starts():
    """Ray's driver installs its own SIGTERM handler, which ends the process without cleanup."""
    proc, _ = start_ray_command()
    try:
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "ray down" in out and proc.returncode == 128 + signal.SIGTERM, err[-2000:]


@pytest.mark.ray
def test_a_lost_ray_head_is_named_and_the_command_unwinds():
    """Ray itself waits 60 s for a lost GCS, then ends the process without cleanup; essa sees it within
    seconds, says so, and unwinds (its `finally` blocks run), exit status 1."""
    proc, gcs_pid = start_ray_command()
    try:
        started = time.monotonic()
        os.kill(gcs_pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=55)  # inside Ray's own 60 s
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-2000:]
    assert "the Ray head of this command is gone: its gcs_server process" in err
    assert "essa align --resume RUN_DIR" in err and "interrupted" not in err
    assert "ray down" in out and time.monotonic() - started < 55


BESIDE_CLUSTER_CODE = """
import ray
from essa.workers.ray_start import init_ray
init_ray(None)
print(ray.get_runtime_context().gcs_address, flush=True)
ray.shutdown()
"""


@pytest.mark.ray
def test_a_local_start_beside_a_ray_start_cluster_makes_its_own(tmp_path):
    """Without an address Ray would join a `ray start` cluster it finds on this machine and then
    refuse the local settings (num_cpus); essa starts its own instance beside it instead."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    head = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--port=0",
            "--disable-usage-stats",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    address = None
    try:
        deadline = time.monotonic() + 90
        while address is None and time.monotonic() < deadline:
            line = head.stdout.readline()
            assert line, "ray start ended before it printed its address"
            if "ray start --address=" in line:
                address = line.split("--address=")[1].split()[0].strip("'\"")
        assert address, "ray start printed no address"
        joined = subprocess.run(
            [sys.executable, "-c", BESIDE_CLUSTER_CODE], capture_output=True, text=True, timeout=120, env=env
        )
        assert joined.returncode == 0, joined.stderr[-2000:]
        assert joined.stdout.split()[-1] != address  # its own instance, not the `ray start` one
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: ending it stops that cluster (not `ray stop`: every cluster)
        head.wait(timeout=60)
        forget_ray_start_address(address)


def forget_ray_start_address(address: str | None) -> None:
    """`ray start` records its address for later ray.init() calls to join (/tmp/ray/ray_current_cluster)
    and only `ray stop` removes it; left behind, it would send later local starts to a dead cluster."""
    from ray._private.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    if address and path.is_file() and path.read_text().strip() == address:
        path.unlink()
