"""The engine's scratch space in RAM: candidate adapters leave it when generation fails (a fake LLM
stands in for vLLM), a replacement engine clears what a killed one of its slot left, and a full
/dev/shm is a clear error before anything is written."""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from essa.io import ram_dir
from essa.model.adapters import principal_init
from essa.model.svd_lora import SVDLoRA


class FailingLLM:
    """Named for what it does: accepts the adapters, then its generate call breaks."""

    def __init__(self):
        self.removed: list[int] = []
        self.llm_engine = SimpleNamespace(remove_lora=self.removed.append)
        self.seen_folders: list[str] = []

    def generate(self, prompts, params, lora_request, use_tqdm):
        self.seen_folders = sorted({r.lora_path for r in lora_request})
        raise RuntimeError("engine broke mid-generation")


def test_candidate_adapters_are_removed_when_generate_raises(tmp_path):
    from essa.workers.engine import EngineOptions, VLLMEngine

    rng = np.random.default_rng(0)
    base = {f"model.layers.{i}.self_attn.q_proj": rng.normal(size=(16, 12)) for i in range(2)}
    basis = SVDLoRA.from_lora(principal_init(base, rank=4, scale=0.05), rank=4, lora_alpha=4)
    engine = object.__new__(VLLMEngine)  # everything but vLLM itself
    engine.options, engine.basis = EngineOptions(model_dir=str(tmp_path), mode="lora"), basis
    engine._scratch, engine._ids, engine._run = ram_dir("essa-test-"), itertools.count(1), "test"
    engine._adapter_bytes = 1024
    engine.llm = FailingLLM()
    try:
        with pytest.raises(RuntimeError, match="mid-generation"):
            engine.generate(["p1", "p2"], {"temperature": 0.0, "max_tokens": 4}, np.zeros((3, basis.dim)))
        assert len(engine.llm.seen_folders) == 3  # the adapters were written and handed over...
        assert list(engine._scratch.iterdir()) == []  # ...and are gone
        assert engine.llm.removed == [1, 2, 3]  # and vLLM was told to drop them
    finally:
        import shutil

        shutil.rmtree(engine._scratch, ignore_errors=True)


def test_a_replacement_engine_removes_what_its_killed_predecessor_left(monkeypatch, tmp_path):
    from essa.workers.engine import scratch

    monkeypatch.setattr(scratch, "ram_root", lambda: tmp_path)
    monkeypatch.setattr(scratch, "ram_dir", lambda prefix: Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_path)))
    killed = scratch.claim_scratch("4242x7-0")
    (killed / "essa-abc-1").mkdir()  # an adapter the killed actor never removed
    neighbour = scratch.claim_scratch("4242x7-10")  # slot 10 of the same pool: not slot 1's
    other_pool = scratch.claim_scratch("99x1-0")
    fresh = scratch.claim_scratch("4242x7-0")
    assert not killed.exists() and fresh.is_dir() and neighbour.is_dir() and other_pool.is_dir()
    scratch.remove_scratch("4242x7-")  # the pool's shutdown
    assert not fresh.exists() and not neighbour.exists() and other_pool.is_dir()


def test_an_engine_removes_what_a_run_killed_as_a_whole_left_and_nothing_else(monkeypatch, tmp_path):
    import json
    import socket
    import subprocess
    import sys

    from essa.workers.engine import scratch

    monkeypatch.setattr(scratch, "ram_root", lambda: tmp_path)
    monkeypatch.setattr(scratch, "ram_dir", lambda prefix: Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_path)))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, host = int(gone.stdout), socket.gethostname()

    def left(name, owner):
        folder = tmp_path / f"essa-engine-{name}"
        (folder / "essa-abc-1").mkdir(parents=True)  # a candidate adapter never removed
        if owner is not None:
            (folder / "owner.json").write_text(json.dumps(owner))
        return folder

    killed = left("555x1-0-a", {"host": host, "pid": dead_pid})
    alive = left("556x1-0-b", {"host": host, "pid": os.getppid()})  # a running engine, another pool's
    elsewhere = left("557x1-0-c", {"host": host + "-other", "pid": dead_pid})  # another host's, shared /dev/shm
    unmarked = left("558x1-0-d", None)
    mine = scratch.claim_scratch("9x9-0")
    assert not killed.exists()
    assert alive.is_dir() and elsewhere.is_dir() and unmarked.is_dir()
    assert json.loads((mine / "owner.json").read_text()) == {"host": host, "pid": os.getpid()}
    assert not scratch._maker_has_exited(mine)  # nor does a later engine take this one


def test_too_little_scratch_space_is_a_clear_error_before_anything_is_written(monkeypatch, tmp_path):
    from essa.workers.engine import scratch

    monkeypatch.setattr(scratch.shutil, "disk_usage", lambda path: SimpleNamespace(free=80 * 2**20))
    scratch.check_scratch_space(tmp_path, 4, 2**20)  # 4 MiB + the margin fit in 80 MiB
    with pytest.raises(scratch.ScratchSpaceError, match=r"80 MiB free; the 32 candidate adapters .* need 32 MiB"):
        scratch.check_scratch_space(tmp_path, 32, 2**20)
    assert issubclass(scratch.ScratchSpaceError, ValueError)  # the pool stops at once, no retries
