"""Where a running essa command's RAM goes: resident memory per process of its tree, by role.

    python scripts/rss_breakdown.py [--pid PID] [--seconds 600] [--every 5]

Samples the process tree of PID (default: the first `essa.cli align` or `essa align` found) every
`--every` seconds until it ends or `--seconds` pass, and prints the sample with the largest sum of
resident set sizes, one line per role (the essa CLI, each Ray actor, each Ray daemon), largest
first. Shared pages count once per process, so the sum is an upper bound, as scripts/timed_side.py
measures it.
"""

from __future__ import annotations

import argparse
import time

import psutil


def is_essa_cli(cmd: list[str]) -> bool:
    """`python -m essa.cli ...` or the `essa` console script."""
    return "essa.cli" in cmd or any(c.endswith("/essa") for c in cmd[:2])


def role(process: psutil.Process) -> str:
    """A short name for what the process is: the Ray actor or daemon it runs, or essa's CLI."""
    try:
        cmd = process.cmdline()
    except psutil.Error:
        return "?"
    if not cmd:
        return process.name()
    if cmd[0].startswith("ray::"):
        return cmd[0]
    if is_essa_cli(cmd):
        return "essa CLI"
    for part in cmd[:3]:
        if part.endswith(".py") or "/ray/" in part:
            return part.rsplit("/", 1)[-1]
    return process.name()


def find_essa() -> psutil.Process | None:
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "align" in cmd and is_essa_cli(cmd):
            return p
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pid", type=int, help="root of the tree (default: a running essa align)")
    ap.add_argument("--seconds", type=float, default=600.0, help="longest sampling time (default 600)")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples (default 5)")
    args = ap.parse_args()
    root = psutil.Process(args.pid) if args.pid else find_essa()
    if root is None:
        raise SystemExit("rss_breakdown: no running essa align found; start one or give --pid")
    peak: dict[str, int] = {}
    end = time.time() + args.seconds
    while time.time() < end and root.is_running():
        sample: dict[str, int] = {}
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for p in tree:
            try:
                name = role(p)
                sample[name] = sample.get(name, 0) + p.memory_info().rss
            except psutil.Error:
                continue
        if sum(sample.values()) > sum(peak.values()):
            peak = sample
        time.sleep(args.every)
    print(f"largest sampled sum: {sum(peak.values()) / 2**30:.2f} GiB (pid {root.pid})")
    for name, rss in sorted(peak.items(), key=lambda kv: -kv[1]):
        print(f"{rss / 2**20:9.0f} MiB  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
