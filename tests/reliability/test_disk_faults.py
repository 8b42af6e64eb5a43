"""A full disk, a read-only folder or a refused write: one clear line, nothing half-written, resumable.

The failures are injected where a real one surfaces, at the fsync of essa's atomic write (a full
file system reports ENOSPC there with delayed allocation; EROFS and EACCES come from the open,
and the path that handles them is the same). The tests run as whatever user CI uses, often
root, for which a chmod-ed folder is still writable, so permission is injected too, not made.
The search uses the in-process FakePool: what is checked is the coordinator's and the CLI's
handling, not an engine.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import essa.io
import essa.run.checkpoint as checkpoint
from essa.cli import main
from essa.run.checkpoint import load_latest
from essa.run.coordinator import align

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "essa"))
sys.path.insert(0, str(HERE))
from coordinator_kill_driver import config  # noqa: E402
from fake_pool import FakePool  # noqa: E402  (fixtures model_dir, straight: conftest.py)


class FailingWrites:
    """While armed, the fsync of essa's atomic writes fails with ``code`` (its data never lands)."""

    def __init__(self, monkeypatch, code: int):
        self.armed, self.failures, self.code = False, 0, code
        real = os.fsync

        def fsync(fd):
            if self.armed:
                self.failures += 1
                raise OSError(self.code, os.strerror(self.code))
            return real(fd)

        monkeypatch.setattr(essa.io.os, "fsync", fsync)


def _lines(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_disk_full_in_a_checkpoint_stops_the_run_which_then_resumes_exactly(model_dir, straight, tmp_path, monkeypatch):
    run = tmp_path / "run"
    disk = FailingWrites(monkeypatch, errno.ENOSPC)
    real_write = checkpoint.atomic_write_bytes

    def write_arrays(path, data):  # the disk fills while generation 3's checkpoint is written
        disk.armed = disk.armed or Path(path).parent.name == ".gen_000003.tmp"
        return real_write(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", write_arrays)
    with pytest.raises(OSError) as failed:
        align(config(str(model_dir)), run, resume=False, pool_factory=FakePool)
    assert failed.value.errno == errno.ENOSPC and disk.failures >= 1
    assert load_latest(run).generation == 2  # the last good checkpoint is untouched
    assert not [p for p in run.rglob("*.tmp") if p.is_file()]  # no half-written file under any name

    disk.armed = False  # space freed
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real_write)
    align(None, run, resume=True, pool_factory=FakePool)  # the run lock was released by the failure

    assert _lines(run) == _lines(straight)
    np.testing.assert_array_equal(load_latest(run).best.z, load_latest(straight).best.z)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (run / "adapter" / name).read_bytes() == (straight / "adapter" / name).read_bytes(), name
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "code, fix", [(errno.ENOSPC, "free space"), (errno.EROFS, "read-only"), (errno.EACCES, "permissions")]
)
def test_a_failed_export_write_is_one_line_and_leaves_nothing_behind(
    code, fix, straight, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "adapter"
    disk = FailingWrites(monkeypatch, code)
    disk.armed = True
    assert main(["export", str(straight), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert os.strerror(code) in err and fix in err, err
    assert not out.exists()  # no half export under the name
    assert not [p.name for p in tmp_path.iterdir() if p.name != "adapter"]  # and no temp folder beside it

    disk.armed = False
    assert main(["export", str(straight), "--out", str(out)]) == 0  # once fixed, the same command works
    assert (out / "adapter_model.safetensors").read_bytes() == (
        straight / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
