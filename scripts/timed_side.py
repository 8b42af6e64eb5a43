"""Run one side of a comparison as a subprocess tree under a wall-clock budget, measuring its memory.

Used by scripts/compare_grpo.py. The side's clock starts at its subprocess's start (loading
included); at the budget it gets SIGTERM (essa and the GRPO side unwind on it), then its process
group and any descendant still alive are stopped; the same happens when this script is interrupted
(Ctrl-C) or sent SIGTERM while a side runs. Peak memory is the largest sum of resident set
sizes over the whole tree, sampled every 0.5 s (shared pages counted once per process: an upper
bound).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GIB = 2**30


class UserError(RuntimeError):
    """Something the user can fix; printed as one line, no traceback."""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Nothing may reach a hub: everything is local. Unbuffered so the logs keep up.
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class TreeMonitor(threading.Thread):
    """Samples the summed RSS of a process and all its descendants every `interval` seconds."""

    def __init__(self, pid: int, t0: float, interval: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.t0, self.interval = t0, interval
        self.peak, self.current, self.peak_procs = 0, 0, 0
        self.series: list[tuple[float, float]] = []  # (seconds, GiB) every ~5 s
        self.seen: dict[int, float] = {}  # pid -> create_time, for the clean-up
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        last_kept = -1e9
        while not self._stop_event.is_set():
            procs = self.sample_tree()
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.current = total
            if total > self.peak:
                self.peak, self.peak_procs = total, len(procs)
            now = time.time() - self.t0
            if now - last_kept >= 5.0:
                self.series.append((round(now, 1), round(total / GIB, 3)))
                last_kept = now
            self._stop_event.wait(self.interval)

    def sample_tree(self) -> list:
        """The tree's processes now, each recorded in `seen` (the clean-up stops only processes it has
        seen); none once the side's main process has gone (its group is still stopped)."""
        import psutil

        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return []
        for proc in procs:
            try:
                self.seen.setdefault(proc.pid, proc.create_time())
            except psutil.Error:
                pass
        return procs

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def run_side(
    name: str, cmd: list[str], log_path: Path, budget_s: float, count_points, t0_file: Path | None = None
) -> dict:
    """Run `cmd` until it exits or the budget is spent; returns timing and peak RSS of its tree."""
    print(f"[compare] {name}: starting, budget {budget_s:g}s, log {log_path}", flush=True)
    print(f"[compare] {name}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    if t0_file is not None:
        t0_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        t0 = time.time()
        if t0_file is not None:  # the child's clock origin: the same as ours
            t0_file.write_text(repr(t0))
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=str(REPO), start_new_session=True
        )
    monitor = TreeMonitor(proc.pid, t0)
    monitor.start()
    stopped_by_budget, last_report = False, t0
    # A kill of this script (SIGTERM, as schedulers send) unwinds like Ctrl-C, so that the side, in a
    # session of its own, is stopped below rather than left running.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while proc.poll() is None:
            now = time.time()
            if now - t0 >= budget_s:
                stopped_by_budget = True
                break
            if now - last_report >= 30:
                last_report = now
                print(
                    f"[compare] {name}: {now - t0:4.0f}/{budget_s:g}s, {count_points()} saved, "
                    f"RSS {monitor.current / GIB:.2f} GiB (peak {monitor.peak / GIB:.2f})",
                    flush=True,
                )
            time.sleep(0.25)
    finally:
        returncode = stop_tree(proc, monitor)
        signal.signal(signal.SIGTERM, previous)
    wall = time.time() - t0
    if not stopped_by_budget and returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        print("\n".join(f"    {line}" for line in tail), file=sys.stderr)
        raise UserError(f"the {name} run stopped with exit code {returncode} after {wall:.0f}s; its log: {log_path}")
    print(
        f"[compare] {name}: {'budget spent' if stopped_by_budget else 'finished'} after {wall:.0f}s, "
        f"{count_points()} saved, peak RSS {monitor.peak / GIB:.2f} GiB over {monitor.peak_procs} processes",
        flush=True,
    )
    return {
        "t0": t0,
        "wall_s": round(wall, 1),
        "stopped_by_budget": stopped_by_budget,
        "returncode": returncode,
        "peak_rss": monitor.peak,
        "peak_processes": monitor.peak_procs,
        "rss_gib_series": monitor.series,
        "log": str(log_path),
    }


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def stop_tree(proc: subprocess.Popen, monitor: TreeMonitor) -> int:
    """SIGTERM to the side's main process (essa and the GRPO child unwind on it as on Ctrl-C), then
    SIGTERM/SIGKILL to its process group, then to any descendant seen while it ran that is still alive.

    Not SIGINT: a comparison started in the background from a script (nohup, `&`) has SIGINT ignored
    by job control, the sides inherit that, and SIGINT would not stop them (measured: 90 s, then the
    fallback's SIGTERM)."""
    import psutil

    monitor.sample_tree()  # descendants born since the last sample are stopped too
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
    monitor.stop()
    leftovers = []
    for pid, created in monitor.seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                leftovers.append(p)
        except psutil.Error:
            pass
    for p in leftovers:  # only processes of this side's tree (same pid AND start time)
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(leftovers, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    if leftovers:
        print(f"[compare] stopped {len(leftovers)} leftover process(es) of that run", flush=True)
    return proc.wait()
