"""Shared pieces of the pool tests: a jsonl task with a known reward, a config for it, and a pool of
fake engines (tests/workers/fake_engine.py) on the running Ray cluster."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from essa.config import Config, EngineConfig, TaskConfig
from essa.io import atomic_write_safetensors
from essa.rewards.task import load_task
from essa.run.rollout_pool import pool_from_config

HERE = Path(__file__).resolve().parent
INDICES = [0, 3, 5, 7]
REWARD = """
def score(completion, example):
    return float(completion.split("|")[0]) + example["k"]

def explode(completion, example):
    raise ValueError("reward exploded on purpose")
"""


def write_pool_files(root: Path) -> Path:
    """The jsonl task, its reward file and an empty model folder, under `root` (the `files` fixture)."""
    rows = [f'{{"prompt": "question {i}", "k": {i}}}' for i in range(40)]
    (root / "data.jsonl").write_text("\n".join(rows) + "\n")
    (root / "reward.py").write_text(REWARD)
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}")
    # a model folder needs safetensors weights (essa refuses pickle-only folders); the fake engine reads none
    atomic_write_safetensors(root / "model" / "model.safetensors", {"unused": np.zeros(1, dtype=np.float32)})
    return root


def make_config(files: Path, reward: str = "score", **engine) -> Config:
    cfg = Config()
    cfg.model.name = str(files / "model")
    cfg.task = TaskConfig(name="jsonl", data_file=str(files / "data.jsonl"), reward=f"{files / 'reward.py'}:{reward}")
    cfg.engine = EngineConfig(**engine)
    return cfg


@contextmanager
def open_pool(cfg: Config, **fake_env: str):
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])), **fake_env}
    pool = pool_from_config(cfg, None, engine_factory="fake_engine:FakeEngine", env=env)
    try:
        yield pool
    finally:
        pool.shutdown()


def expected_scores(cfg: Config, vectors: np.ndarray | None) -> np.ndarray:
    examples = load_task(cfg.task).examples("train")
    k = np.mean([examples[i]["k"] for i in INDICES])
    sums = [0.0] if vectors is None else [float(f"{x.sum():.6f}") for x in vectors]
    return np.array(sums) + k


def actor_env(actor, key: str) -> str | None:
    """An environment variable as the actor's process sees it."""
    import ray

    return ray.get(actor.__ray_call__.remote(lambda _worker: os.environ.get(key)))


def candidates(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6))
