"""The GPU code paths, end to end on one CUDA GPU: run by scripts/gpu_check.sh, skipped without a GPU.

Each test runs `essa align` with `--gpus 1` on the embedded model through upstream vLLM (the `gpu`
extra): lora and merge mode on the bf16 base, the INT8 (W8A8) and INT4 (W4A16) bases, then resume
and export of the lora run. These tests have not yet run on a GPU in the project's CI (it has none);
docs/scaling.md records each time scripts/gpu_check.sh ran on one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.e2e, pytest.mark.timeout(1200)]

ONE_GPU = [
    "--task",
    "gsm8k",
    "--gpus",
    "1",
    "--popsize",
    "4",
    "--batch-size",
    "4",
    "--max-new-tokens",
    "48",
    "task.val_size=4",
    "run.validate_every=1",
    "run.checkpoint_every=1",
    "adapter.init=principal",  # no SFT: the engine paths are under test, not the warm start
    "search.sigma=0.5",
    "engine.gpu_memory_utilization=0.3",
]


def essa(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "essa.cli", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"essa {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def generations(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [m for m in lines if m["generation"] >= 0]


def assert_scored(run: Path, count: int) -> None:
    gens = generations(run)
    assert [m["generation"] for m in gens] == list(range(count))
    for m in gens:
        assert 0.0 <= m["reward_mean"] <= 1.0 and m["tokens"] > 0 and m["reward_errors"] == 0


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gpu") / "lora"
    essa("align", *ONE_GPU, "engine.mode=lora", "--generations", "2", "--run-dir", str(run))
    return run


def test_lora_mode_scores_every_generation_and_exports(lora_run):
    assert_scored(lora_run, 2)
    assert (lora_run / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((lora_run / "inputs.json").read_text())  # the run recorded what it used


def test_resume_on_gpu_continues_from_the_checkpoint(lora_run):
    essa("align", "--resume", str(lora_run), "--generations", "3")
    assert_scored(lora_run, 3)
    assert (lora_run / "checkpoints" / "latest").read_text().strip() == "gen_000003"


def test_export_of_the_gpu_run_as_a_merged_model(lora_run, tmp_path):
    out = tmp_path / "merged"
    essa("export", str(lora_run), "--out", str(out), "--merge")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and list(out.glob("*.safetensors"))


def test_merge_mode_on_gpu(tmp_path):
    run = tmp_path / "merge"
    essa("align", *ONE_GPU, "engine.mode=merge", "--generations", "1", "--run-dir", str(run))
    assert_scored(run, 1)


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_quantized_bases_on_gpu(tmp_path, quantization):
    run = tmp_path / quantization
    essa("align", *ONE_GPU, f"model.quantization={quantization}", "--generations", "1", "--run-dir", str(run))
    assert_scored(run, 1)
    from essa.config import from_yaml_file

    assert from_yaml_file(run / "config.yaml").model.quantization == quantization
