"""The engine's candidate adapters leave RAM when generation fails (a fake LLM stands in for vLLM)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from essa.adapters import principal_init
from essa.io import ram_dir
from essa.svd_lora import SVDLoRA


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
