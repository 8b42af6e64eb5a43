"""End to end on CPU with real parts: the embedded model in real vLLM inside a real Ray actor.

One module-scoped run of `essa align` (SFT warm start on 8 pairs, 1 generation, popsize 4,
4 prompts, 48 new tokens), then `--resume` for a second generation, compared with an uninterrupted
2-generation run; then export, PEFT loading and generation, and `essa eval` scoring the exported
adapter through vLLM in `lora` mode on IFEval with its four standard numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

SMALL = [
    "--task",
    "gsm8k",
    "--gpus",
    "0",
    "--popsize",
    "4",
    "--batch-size",
    "4",
    "--max-new-tokens",
    "48",
    "task.val_size=4",
    "run.validate_every=1",
    "run.checkpoint_every=1",
    # the default warm start, SFT, on 8 GSM8K pairs (2 steps); the second run finds it cached
    "sft.max_examples=8",
    "sft.batch_size=4",
    "engine.enforce_eager=true",  # eager starts in ~30 s instead of ~80 s; merge under compile is tested elsewhere
    "search.sigma=0.5",
]  # a set step: the step-size calibration is exercised by tests/test_e2e_learning.py


def essa(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "essa.cli", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"essa {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    resumed, straight = root / "resumed", root / "straight"
    essa("align", *SMALL, "--generations", "1", "--run-dir", str(resumed))
    first_leg = metrics(resumed)
    essa("align", "--resume", str(resumed), "--generations", "2")
    essa("align", *SMALL, "--generations", "2", "--run-dir", str(straight))
    return {"resumed": resumed, "straight": straight, "first_leg": first_leg, "root": root}


def test_align_writes_checkpoints_metrics_and_adapter(runs):
    run = runs["resumed"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "gen_000002"
    assert sorted(p.name for p in (run / "checkpoints").glob("gen_*")) == ["gen_000001", "gen_000002"]
    gens = [m["generation"] for m in metrics(run)]
    assert gens == [-1, 0, 1]
    for record in metrics(run)[1:]:
        assert 0.0 <= record["reward_mean"] <= 1.0 and record["tokens"] > 0
        assert {"generate", "apply", "score", "ask_tell"} <= set(record["time"])
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    from essa.config import from_yaml_file

    assert from_yaml_file(run / "config.yaml").search.generations == 2  # the extension was saved


def test_resume_matches_an_uninterrupted_run(runs):
    resumed, straight = metrics(runs["resumed"]), metrics(runs["straight"])
    assert runs["first_leg"] == resumed[:2]  # resuming kept the first leg's log untouched
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]  # noqa: E731
    assert strip(resumed) == strip(straight)
    a = np.load(runs["resumed"] / "checkpoints" / "gen_000002" / "arrays.npz")
    b = np.load(runs["straight"] / "checkpoints" / "gen_000002" / "arrays.npz")
    assert a.files == b.files
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key


def test_sigkill_in_the_middle_of_a_generation_then_resume_equals_the_uninterrupted_run(runs):
    """The real-engine case of the coordinator kill tests (tests/reliability/test_coordinator_kill.py):
    the whole process group (coordinator, Ray, the engine) is SIGKILLed once generation 1 is
    checkpointed, that is inside generation 2; --resume must then give the straight run's log and adapter."""
    import signal
    import time

    run = runs["root"] / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "essa.cli", "align", *SMALL, "--generations", "2", "--run-dir", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    latest, deadline = run / "checkpoints" / "latest", time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        if latest.is_file() and latest.read_text().strip() == "gen_000001":
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "adapter").exists()  # it died before the end

    essa("align", "--resume", str(run))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]  # noqa: E731
    assert strip(metrics(run)) == strip(metrics(runs["straight"]))
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (run / "adapter" / name).read_bytes() == (runs["straight"] / "adapter" / name).read_bytes(), name


def test_exported_adapter_loads_in_peft_and_generates(runs):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from essa.model.provision import resolve_model
    from essa.run.checkpoint import load_latest
    from essa.run.run_dir import open_run

    out = runs["root"] / "exported"
    essa("export", str(runs["resumed"]), "--out", str(out))
    model_dir = resolve_model("smollm2-135m-instruct")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    w0 = base.model.layers[3].self_attn.q_proj.weight.detach().clone()
    model = PeftModel.from_pretrained(base, out)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer("What is 2 + 3?", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > ids["input_ids"].shape[1]
    # The adapter PEFT loaded is the run's best point: W0 + ΔW(best x) from the frozen basis.
    _, basis = open_run(runs["resumed"])
    best_x = load_latest(runs["resumed"]).best.z * basis.step_scales()
    expected = basis.delta(best_x)["model.layers.3.self_attn.q_proj"]
    merged = model.merge_and_unload().model.layers[3].self_attn.q_proj.weight.detach()
    assert np.allclose((merged - w0).numpy(), expected, atol=1e-5)


def test_eval_scores_the_exported_adapter_through_vllm_lora_with_ifevals_four_numbers(runs, tmp_path):
    out = runs["root"] / "exported-for-vllm"
    essa("export", str(runs["resumed"]), "--out", str(out))
    result = tmp_path / "ifeval.json"
    essa(
        "eval",
        "--task",
        "ifeval",
        "--split",
        "test",
        "--adapter",
        str(out),
        "--limit",
        "3",
        "--max-new-tokens",
        "48",
        "--out",
        str(result),
        "engine.mode=lora",
        "engine.enforce_eager=true",
    )
    report = json.loads(result.read_text())
    assert report["examples"] == 3 and 0 < report["mean_new_tokens"] <= 48
    for key in ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["prompt_level_loose_acc"] >= report["prompt_level_strict_acc"]


FLAKY_REWARD = """
from pathlib import Path

FLAG = Path({flag!r})


def score(completion, example):
    # the reference solution passes (essa's trial call before the run): the failure comes from the workers
    if FLAG.exists() and "####" not in completion:
        raise RuntimeError("reward backend unavailable")
    return float(len(completion) % 2)
"""


def test_failing_reward_plugin_stops_with_a_clear_error_and_the_run_resumes(tmp_path):
    flag, plugin, run = tmp_path / "fail-now", tmp_path / "flaky_reward.py", tmp_path / "run"
    plugin.write_text(FLAKY_REWARD.format(flag=str(flag)))
    tiny = [
        "--task",
        "gsm8k",
        "--reward",
        f"{plugin}:score",
        "--init",
        "principal",
        "--popsize",
        "2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "16",
        "task.val_size=2",
        "run.checkpoint_every=1",
        "engine.enforce_eager=true",
        "search.sigma=0.5",
    ]  # no step-size calibration: not what this test is about
    essa("align", *tiny, "--generations", "1", "--run-dir", str(run))
    assert (run / "checkpoints" / "latest").read_text().strip() == "gen_000001"

    flag.touch()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    failed = subprocess.run(
        [sys.executable, "-m", "essa.cli", "align", "--resume", str(run), "--generations", "2"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert failed.returncode == 2
    for part in ("flaky_reward.py:score", "train example", "reward backend unavailable", "reward_errors=zero"):
        assert part in failed.stderr, part
    assert (run / "checkpoints" / "latest").read_text().strip() == "gen_000001"  # nothing lost

    flag.unlink()
    essa("align", "--resume", str(run))
    assert (run / "checkpoints" / "latest").read_text().strip() == "gen_000002"
    assert [m["generation"] for m in metrics(run)] == [-1, 0, 1]
