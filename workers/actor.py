"""The rollout worker: one Ray actor owns one inference engine and exposes one `evaluate(work)`.

Workers receive the frozen SVD basis once (inside `WorkerSpec`); per generation they get only
candidate vectors and prompt indices, and send back rewards and token counts: no text or weights
cross the network. Prompts are built and rewards computed here, next to the completions.

A `WorkItem` names its call (the pool's per-evaluate nonce), generation and item id; the
`WorkResult` echoes them, so the pool can drop results that belong to an earlier call or to an
item it already has.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from essa.model.svd_lora import SVDLoRA

if TYPE_CHECKING:
    from essa.config import TaskConfig


@dataclass
class WorkerSpec:
    task: TaskConfig
    model: str  # a name resolve_model understands; each worker resolves it on its own node
    engine_options: dict  # EngineOptions fields except model_dir
    sampling: dict  # SamplingParams fields
    basis_bytes: bytes | None  # the SVD-LoRA basis as safetensors bytes; None: base model only
    engine_factory: str = "essa.workers.engine:VLLMEngine"  # tests swap in a fake for scheduling
    env: dict[str, str] = field(default_factory=dict)  # extra environment of every actor (tests: PYTHONPATH)
    quantization: str = "none"  # none | int8 | int4: each worker loads (making once) that quantized copy of the model


@dataclass
class WorkItem:
    generation: int  # -1 for evaluations outside the search loop
    candidate_ids: list[int]
    vectors: np.ndarray | None  # (candidates, dim) offsets x; None: the base model
    split: str
    indices: list[int]
    # Defaults keep the positional form above working (scripts score items outside any pool).
    call: int = 0  # the pool's nonce for one evaluate() call: generation -1 repeats, this never does
    item_id: int = 0  # position of the item within its call
    details: bool = False  # also return the task's per-example evaluation fields (essa eval)
    texts: bool = False  # also return the completions' text (rejection sampling for SFT)


@dataclass
class WorkResult:
    candidate_ids: list[int]
    rewards: np.ndarray  # (candidates, prompts)
    tokens: np.ndarray  # (candidates,) generated tokens
    timings: dict[str, float] = field(default_factory=dict)  # apply, generate, score (seconds)
    reward_errors: int = 0  # reward calls that failed and were scored 0 (task.reward_errors=zero)
    call: int = 0  # echoed from the WorkItem
    item_id: int = 0  # echoed from the WorkItem
    details: dict[str, np.ndarray] = field(default_factory=dict)  # field -> (candidates, prompts)
    texts: list[list[str]] | None = None  # (candidates, prompts) completions, when the item asked


class RolloutWorker:
    """Plain class; the pool wraps it with `ray.remote` and its resource options."""

    def __init__(self, spec: WorkerSpec, scratch_tag: str = ""):
        from essa.model.provision import resolve_model
        from essa.model.quantize import quantized_model_dir
        from essa.rewards.plugins import SafeReward
        from essa.rewards.task import load_task
        from essa.workers.engine import EngineOptions

        self.task = load_task(spec.task)
        self.reward = SafeReward(self.task.score, self.task.reward_name, spec.task.reward_errors)
        basis = SVDLoRA.from_bytes(spec.basis_bytes) if spec.basis_bytes else None
        # Candidates' adapters come from the bf16 weights (the basis); the engine may serve a quantized copy.
        model_dir = quantized_model_dir(resolve_model(spec.model), spec.quantization)
        options = EngineOptions(model_dir=str(model_dir), **spec.engine_options, scratch_tag=scratch_tag)
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
        if len(completions) != len(work.candidate_ids):
            # A wrong row count would silently shift every later candidate's score.
            raise ValueError(
                f"the engine returned {len(completions)} rows of completions for {len(work.candidate_ids)} "
                f"candidates (item {work.item_id}); an engine must return one row per candidate"
            )
        start, errors_before = time.perf_counter(), self.reward.errors
        batch = [examples[i] for i in work.indices]
        wheres = [f"{work.split} example {i}" for i in work.indices]
        rewards = np.array(
            [self.reward.many([c.text for c in row], batch, wheres) for row in completions], dtype=np.float64
        ).reshape(len(completions), len(work.indices))
        timings["score"] = time.perf_counter() - start
        tokens = np.array([sum(c.tokens for c in row) for row in completions], dtype=np.int64)
        details = self._details(completions, examples, work.indices) if work.details else {}
        return WorkResult(
            work.candidate_ids,
            rewards,
            tokens,
            timings,
            self.reward.errors - errors_before,
            call=work.call,
            item_id=work.item_id,
            details=details,
            texts=[[c.text for c in row] for row in completions] if work.texts else None,
        )

    def _details(self, completions, examples, indices) -> dict[str, np.ndarray]:
        """The task's per-example evaluation fields (IFEval: instructions followed, strict and loose)."""
        if self.task.eval_fields is None:
            return {}
        rows = [[self.task.eval_fields(c.text, examples[i]) for c, i in zip(row, indices)] for row in completions]
        keys = rows[0][0].keys() if rows and rows[0] else []
        return {key: np.array([[fields[key] for fields in row] for row in rows]) for key in keys}

    def close(self) -> None:
        """Stop the engine (its processes and scratch files) before the actor is killed."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def _prompt(self, split: str, index: int) -> str:
        cache = self._prompts.setdefault(split, [None] * len(self.task.examples(split)))
        prompt = cache[index]
        if prompt is None:
            messages = self.task.build_messages(self.task.examples(split)[index])
            prompt = cache[index] = self.engine.tokenizer().apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return prompt
