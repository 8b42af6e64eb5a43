"""scripts/rss_breakdown.py on a small process tree of plain Python (no essa run needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rss_breakdown.py"
sys.path.insert(0, str(SCRIPT.parent))
import rss_breakdown  # noqa: E402


def test_the_largest_sample_of_a_tree_is_printed_by_role(tmp_path):
    child = tmp_path / "child_role.py"
    child.write_text("import time\nblob = bytearray(64 * 2**20)\ntime.sleep(30)\n")
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, {str(child)!r}])"]
    )
    try:
        out = subprocess.run(
            [sys.executable, str(SCRIPT), "--pid", str(parent.pid), "--seconds", "3", "--every", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True) + [psutil.Process(parent.pid)]:
            p.kill()
    assert f"(pid {parent.pid})" in out
    lines = {line.split()[-1]: int(line.split()[0]) for line in out.splitlines()[1:]}
    assert lines["child_role.py"] >= 64  # MiB: the child's 64 MiB buffer, named by its script
    assert rss_breakdown.role(psutil.Process()) != "?"
