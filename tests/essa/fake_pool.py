"""FakePool: an in-process stand-in for the rollout pool, for unit tests of the coordinator.

No Ray, no engine. A candidate's reward on prompt j is a smooth function of its search point
z = x / step_scales:  sigmoid(GAIN · (a + b_j) · z + c_j), where the direction a is shared by
every prompt (what a search can learn and carry to unseen prompts), b_j is the prompt's own
direction (candidate × prompt interaction: noise to the ranking) and c_j its difficulty. All
are seeded by (split, index), so a prompt scores the same whenever it is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from essa.io import atomic_write_json, atomic_write_safetensors
from essa.workers.pool import PoolResult

GAIN = 0.6


class FakePool:
    def __init__(self, cfg, basis, fail_at_generation: int | None = None, flat: bool = False):
        self.scales = basis.step_scales()
        self.dim = basis.dim
        self.fail_at_generation = fail_at_generation
        self.flat = flat
        self.calls: list[tuple[str, int, int]] = []  # (split, generation, candidates)
        self.closed = False
        self.stats = dict(restarts=0, retries=0, timeouts=0)  # a fake engine never faults
        a = np.random.default_rng(99).standard_normal(self.dim)
        self.direction = a / np.linalg.norm(a)

    def evaluate(self, vectors, split, indices, generation=-1, details=False, texts=False) -> PoolResult:
        if self.fail_at_generation is not None and generation == self.fail_at_generation:
            raise KeyboardInterrupt  # the coordinator killed mid-generation
        z = np.zeros((1, self.dim)) if vectors is None else np.asarray(vectors) / self.scales
        self.calls.append((split, generation, len(z)))
        rewards = np.empty((len(z), len(indices)))
        for col, index in enumerate(indices):
            rng = np.random.default_rng([sum(map(ord, split)), index])
            b = rng.standard_normal(self.dim) / np.sqrt(self.dim)
            c = rng.normal(0, 0.5)
            with np.errstate(over="ignore"):  # far from the start exp overflows to inf: reward 0, as it should
                rewards[:, col] = 1 / (1 + np.exp(-(GAIN * z @ (self.direction + b) + c)))
        if self.flat:
            rewards[:] = 0.0
        if vectors is None:
            rewards -= 0.01  # the base model: a little worse than the warm start
        return PoolResult(rewards, np.full(len(z), 10 * len(indices)), {"generate": 0.0})

    def shutdown(self) -> None:
        self.closed = True


def write_tiny_model(folder):
    """A two-layer 'model' folder: q_proj weights and a config.json, enough for a principal start."""
    rng = np.random.default_rng(0)
    atomic_write_json(folder / "config.json", {"model_type": "tiny"})
    atomic_write_safetensors(
        folder / "model.safetensors",
        {
            f"model.layers.{i}.self_attn.q_proj.weight": rng.standard_normal((12, 12)).astype(np.float32)
            for i in range(2)
        },
    )
    return folder


def tiny_config(model_dir, *overrides: str):
    """The small run most coordinator tests make on write_tiny_model's folder: principal start, rank 2
    on q_proj, λ 8, B 8, 16 validation prompts every 2 generations, σ 0.5; `overrides` on top."""
    from essa.config import load_config

    flags = {"model.name": str(model_dir), "adapter.init": "principal", "search.popsize": 8}
    return load_config(
        "gsm8k",
        None,
        flags,
        [
            "adapter.rank=2",
            "adapter.target_modules=[q_proj]",
            "task.batch_size=8",
            "task.val_size=16",
            "run.validate_every=2",
            "search.sigma=0.5",
            *overrides,
        ],
    )


def tiny_run(root, *overrides: str, model_name: str = "model"):
    """A finished FakePool run of tiny_config on a fresh tiny model under `root`: (run folder, model folder)."""
    from essa.run.coordinator import align

    model = write_tiny_model(Path(root) / model_name)
    align(tiny_config(model, *overrides), Path(root) / "run", resume=False, pool_factory=FakePool)
    return Path(root) / "run", model
