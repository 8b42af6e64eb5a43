"""Ray for one essa command: join a cluster by address or start a fresh local head
(`init_ray`), unwind cleanly when stopped while Ray starts, and watch a local head's processes so
that losing one stops the command in essa's words (`ray_head_lost`) instead of Ray's, a minute
later and without cleanup."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any


def init_ray(address: str | None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local one; once per process."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        # Ray's driver installs a C-level SIGTERM handler that ends the process on the spot; keep the
        # Python one (essa.cli's: unwind, shut engines down), which is restored when ray.init returns.
        previous = signal.getsignal(signal.SIGTERM)
        try:
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                # "local": always a fresh local instance. Without it Ray joins a `ray start` cluster it finds
                # on this machine and then refuses num_cpus; that cluster is joined only when asked (address).
                ray.init(
                    address="local",
                    num_cpus=os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=True,
                    logging_level=logging.WARNING,
                )
        except BaseException as exc:  # stopped while Ray starts (a SIGTERM, Ctrl-C) or a failed start
            _stop_partial_ray()
            if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM:  # Ray's handler: sys.exit(15)
                raise KeyboardInterrupt(signal.SIGTERM) from None  # unwinds as essa.cli's SIGTERM does
            raise
        finally:
            if callable(previous) and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
        _head_lost.clear()  # a new head: an earlier one's loss is history
        if not address:
            _watch_local_head()


def _stop_partial_ray() -> None:
    """After an interrupted or failed ray.init: shut down what it started, and end any Ray process it had
    spawned before it recorded it (a head killed mid-start otherwise leaves its gcs_server running)."""
    import psutil
    import ray

    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001 - half-started: whatever shutdown can do, the sweep below finishes
        pass
    ours = [child for child in psutil.Process().children(recursive=True) if _is_ray_process(child)]
    for child in ours:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(ours, timeout=5)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass


def _is_ray_process(process) -> bool:
    import psutil

    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return any(part in command for part in ("gcs_server", "raylet", "/ray/", "ray::", "ray/_private"))


_head_lost: list[str] = []  # what of this process's local Ray head exited, once the watchdog saw it


def ray_head_lost() -> str | None:
    """The local Ray head's process that exited under a running command (essa.cli names it), else None."""
    return _head_lost[0] if _head_lost else None


def _watch_local_head(interval_s: float = 1.0, grace_s: float = 3.0) -> None:
    """Watch the GCS server and raylet of the Ray head this process started; if one exits while Ray
    is in use, say so in essa's words and stop the command with SIGTERM, so it unwinds (engines shut
    down, the last checkpoint kept). Ray's own reaction comes 60 s later and ends the process
    without cleanup, after a message about rpc_client.h. A head one joins by address is not watched:
    its processes live elsewhere, and Ray reports them lost itself.
    """
    import ray
    from ray._private import ray_constants, worker

    node: Any = worker._global_node  # a Node once Ray is up, else None (the AttributeError below); Ray types it None
    try:
        watched = [
            (kind, info.process)
            for kind in (ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET)
            for info in node.all_processes.get(kind, [])
        ]
    except AttributeError:  # Ray's internals moved: Ray's own message still comes
        return

    def in_use(kind: str) -> bool:  # ray.shutdown() kills the head too, and then forgets it
        current: Any = worker._global_node  # Ray types it None (which would narrow node to None)
        return current is node and ray.is_initialized() and kind in node.all_processes

    def watch() -> None:
        while in_use(ray_constants.PROCESS_TYPE_GCS_SERVER):
            for kind, process in watched:
                if process.poll() is not None:
                    time.sleep(grace_s)
                    if not in_use(kind):
                        return
                    _head_lost.append(f"its {kind} process (pid {process.pid}) exited with status {process.returncode}")
                    print(
                        f"\nessa: the Ray head of this command is gone: {_head_lost[0]}. Stopping; every file "
                        "written so far is intact (an essa align run continues with essa align --resume RUN_DIR)",
                        file=sys.stderr,
                        flush=True,
                    )
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
            time.sleep(interval_s)

    threading.Thread(target=watch, name="essa-ray-head-watch", daemon=True).start()
