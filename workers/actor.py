"""The rollout worker: one Ray actor owns one inference engine and exposes one `evaluate(work)`.

Workers receive the frozen SVD basis once (inside `WorkerSpec`); per generation they get only
candidate vectors and prompt indices, and send back rewards and token counts: no text or weights
cross the network. Prompts are built and rewards computed here, next to the completions.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field

import numpy as np

from essa.svd_lora import SVDLoRA


@dataclass
class WorkerSpec:
    task: object  # essa.config.TaskConfig
    model: str  # a name resolve_model understands; each worker resolves it on its own node
    engine_options: dict  # EngineOptions fields except model_dir
    sampling: dict  # SamplingParams fields
    basis_bytes: bytes | None  # the SVD-LoRA basis as safetensors bytes; None: base model only
    engine_factory: str = "essa.workers.engine:VLLMEngine"  # tests swap in a fake for scheduling


@dataclass
class WorkItem:
    generation: int  # -1 for evaluations outside the search loop
    candidate_ids: list[int]
    vectors: np.ndarray | None  # (candidates, dim) offsets x; None: the base model
    split: str
    indices: list[int]


@dataclass
class WorkResult:
    generation: int
    candidate_ids: list[int]
    rewards: np.ndarray  # (candidates, prompts)
    tokens: np.ndarray  # (candidates,) generated tokens
    timings: dict[str, float] = field(default_factory=dict)  # apply, generate, score (seconds)
    reward_errors: int = 0  # reward calls that failed and were scored 0 (task.reward_errors=zero)


class RolloutWorker:
    """Plain class; the pool wraps it with `ray.remote` and its resource options."""

    def __init__(self, spec: WorkerSpec):
        from essa.models import resolve_model
        from essa.rewards.plugins import SafeReward
        from essa.rewards.task import load_task
        from essa.workers.engine import EngineOptions

        self.task = load_task(spec.task)
        self.reward = SafeReward(self.task.score, self.task.reward_name, spec.task.reward_errors)
        basis = SVDLoRA.from_bytes(spec.basis_bytes) if spec.basis_bytes else None
        options = EngineOptions(model_dir=str(resolve_model(spec.model)), **spec.engine_options)
        module, name = spec.engine_factory.split(":")
        self.engine = getattr(importlib.import_module(module), name)(options, basis)
        self.sampling = spec.sampling
        self._prompts: dict[str, list[str | None]] = {}

    def ready(self) -> bool:
        return True

    def evaluate(self, work: WorkItem) -> WorkResult:
        examples = self.task.examples(work.split)
        prompts = [self._prompt(work.split, i) for i in work.indices]
        completions, timings = self.engine.generate(prompts, self.sampling, work.vectors)
        start, errors_before = time.perf_counter(), self.reward.errors
        rewards = np.array(
            [
                [self.reward(c.text, examples[i], f"{work.split} example {i}") for c, i in zip(row, work.indices)]
                for row in completions
            ],
            dtype=np.float64,
        )
        timings["score"] = time.perf_counter() - start
        tokens = np.array([sum(c.tokens for c in row) for row in completions], dtype=np.int64)
        return WorkResult(
            work.generation, work.candidate_ids, rewards, tokens, timings, self.reward.errors - errors_before
        )

    def _prompt(self, split: str, index: int) -> str:
        cache = self._prompts.setdefault(split, [None] * len(self.task.examples(split)))
        if cache[index] is None:
            messages = self.task.build_messages(self.task.examples(split)[index])
            cache[index] = self.engine.tokenizer().apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return cache[index]

