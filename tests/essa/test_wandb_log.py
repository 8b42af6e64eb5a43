"""run.wandb_project: the run's scalars go to Weights & Biases too, tested with wandb itself, offline.

WANDB_MODE=offline makes wandb write its run file (RUN/wandb/offline-run-*/run-ID.wandb) and
nothing else; the test reads that file back (a LevelDB-style log of protobuf records, read here
by `_wandb_history`) and checks every history row against metrics.jsonl, and that a resumed run
continues the same W&B run. The search uses the in-process FakePool (no engine).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from essa.config import ConfigError, load_config
from essa.run.coordinator import align
from essa.run.run_log import scalars, wandb_run_id

sys.path.insert(0, str(Path(__file__).parent))
from fake_pool import FakePool, tiny_config, write_tiny_model

wandb = pytest.importorskip("wandb")


def _wandb_history(run_file: Path) -> list[dict]:
    """The history rows of a .wandb file: 32 KiB blocks of chunks (crc32 u32, length u16, type u8;
    type 1 whole, 2-4 first/middle/last) after a 7-byte header, each record a wandb Record."""
    from wandb.proto import wandb_internal_pb2

    data, at, block, records, partial = run_file.read_bytes(), 7, 32768, [], b""
    while at + 7 <= len(data):
        left = block - at % block
        _, length, kind = struct.unpack("<IHB", data[at : at + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):
            at += left
            continue
        chunk, at = data[at + 7 : at + 7 + length], at + 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind in (2, 3):
            partial += chunk
        elif kind == 4:
            records.append(partial + chunk)
            partial = b""
    rows = []
    for raw in records:
        record = wandb_internal_pb2.Record.FromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
    return rows


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_the_scalars_of_every_generation_reach_wandb_and_a_resume_continues_its_run(offline, tmp_path):
    model = write_tiny_model(tmp_path / "model")
    run = tmp_path / "run"
    align(
        tiny_config(model, "search.generations=4", "run.wandb_project=essa-test"),
        run,
        resume=False,
        pool_factory=FakePool,
    )
    files = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{wandb_run_id(run)}.wandb"]
    history = _wandb_history(files[0])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = {r["generation"] + 1: scalars(r) for r in lines}
    got = {row["_step"]: {k: v for k, v in row.items() if not k.startswith("_")} for row in history}
    assert set(got) == set(expected) == {0, 1, 2, 3, 4}
    for step, values in expected.items():
        assert got[step] == pytest.approx(values, rel=1e-9), step
    assert "validation/reward" in got[0] and "validation/base_model" in got[0]

    align(None, run, resume=True, changes={"search.generations": 6}, pool_factory=FakePool)
    files = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2 and len({f.name for f in files}) == 1  # the same W&B run id, continued
    resumed = {row["_step"] for f in files for row in _wandb_history(f)}
    assert resumed == {0, 1, 2, 3, 4, 5, 6}


def test_a_wandb_project_without_wandb_installed_is_refused_before_the_run(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"run.wandb_project='essa-test' needs the wandb package: pip install wandb"):
        load_config("gsm8k", overrides=["run.wandb_project=essa-test"])
