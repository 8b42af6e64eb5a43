"""`essa export --merge`: the adapter merged into the base weights, a folder transformers loads as is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from essa.cli import main
from essa.model.adapters import read_peft_adapter, write_peft_adapter
from essa.model.merge import write_merged_model
from essa.report.export import export_best

sys.path.insert(0, str(Path(__file__).parent))
import fake_pool


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return fake_pool.tiny_run(tmp_path_factory.mktemp("merge"), "search.generations=4")


def test_merged_weights_are_the_base_plus_the_scaled_adapter(tiny_run, tmp_path, capsys):
    from safetensors.numpy import load_file

    run, model = tiny_run
    out = export_best(run, tmp_path / "merged", merge=True)
    lora, config = read_peft_adapter(run / "adapter")
    scaling = config["lora_alpha"] / config["r"]
    base, merged = load_file(model / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(merged) == set(base)
    for module, (a, b) in lora.items():
        np.testing.assert_allclose(merged[f"{module}.weight"], base[f"{module}.weight"] + scaling * b @ a, rtol=1e-6)
    assert (out / "config.json").read_bytes() == (model / "config.json").read_bytes()
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "merged into its weights" in card
    assert json.loads((out / "essa.json").read_text())["merged"] is True

    assert main(["export", str(run), "--out", str(out), "--merge"]) == 2  # never replaces a folder
    assert "--merge writes a new model folder" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(out)]) == 2  # nor does a plain export replace a merged one


def test_an_adapter_for_another_model_is_refused_by_name(tiny_run, tmp_path):
    _, model = tiny_run
    wrong = {"model.layers.0.self_attn.q_proj": (np.ones((2, 5), np.float32), np.ones((7, 2), np.float32))}
    with pytest.raises(ValueError, match="made for another model"):
        write_merged_model(tmp_path / "out", model, wrong, 1.0)
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_transformers_loads_the_merged_default_model_and_it_answers_as_base_plus_adapter(tmp_path):
    torch = pytest.importorskip("torch")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from essa.model.adapters import read_base_weights
    from essa.model.provision import resolve_model

    model_dir = resolve_model("smollm2-135m-instruct")
    rng = np.random.default_rng(0)
    weights = read_base_weights(model_dir, ["q_proj", "v_proj"])  # every layer's: PEFT expects them all
    lora = {
        m: (
            (0.05 * rng.standard_normal((4, w.shape[1]))).astype(np.float32),
            (0.05 * rng.standard_normal((w.shape[0], 4))).astype(np.float32),
        )
        for m, w in weights.items()
    }
    adapter = write_peft_adapter(tmp_path / "adapter", lora, 4, 8.0, str(model_dir))
    merged = write_merged_model(tmp_path / "merged", model_dir, lora, 8.0 / 4)

    ids = torch.tensor([[1, 504, 3458, 314, 253, 1789, 28, 308, 314]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
        plain = base(ids).logits
        with_adapter = PeftModel.from_pretrained(base, adapter)(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(merged, torch_dtype=torch.float32)(ids).logits
    effect = (with_adapter - plain).norm()
    assert effect > 1.0  # the adapter changes the answer
    assert (merged_logits - with_adapter).norm() < 0.1 * effect  # bf16 rounding of W + ΔW only
