"""`essa eval`: a task's metric for the base model or an adapter, on any split.

An adapter is scored through the same SVD basis as a search candidate at x = 0, which
reproduces it exactly, so evaluation and search share one code path in the worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from essa.config import Config
from essa.model.adapters import read_peft_adapter
from essa.model.svd_lora import SVDLoRA
from essa.rewards.task import load_task
from essa.stats import PairedDifference, paired_difference

CHUNK = 128  # prompts per work item: big enough to batch well, small enough to show progress


def evaluate(cfg: Config, split: str, adapter: Path | None, limit: int | None) -> dict:
    from essa.run.rollout_pool import pool_from_config

    task = load_task(cfg.task)
    n = len(task.examples(split))
    indices = list(range(min(n, limit) if limit else n))
    basis, vectors = None, None
    if adapter is not None:
        lora, config = read_peft_adapter(adapter)
        basis = SVDLoRA.from_lora(lora, int(config["r"]), float(config.get("lora_alpha", config["r"])))
        vectors = np.zeros((1, basis.dim))
    pool = pool_from_config(cfg, basis)
    rewards, tokens = [], 0
    fields: dict[str, list[float]] = {}
    try:
        for start in tqdm(range(0, len(indices), CHUNK), desc=f"eval {cfg.task.name}/{split}", unit="chunk"):
            result = pool.evaluate(vectors, split, indices[start : start + CHUNK], details=True)
            rewards.append(result.rewards[0])
            tokens += int(result.tokens.sum())
            for key, values in result.details.items():
                fields.setdefault(key, []).extend(values[0].tolist())
    finally:
        pool.shutdown()
    rewards = np.concatenate(rewards)
    standard = task.aggregate(fields) if task.aggregate is not None and fields else {}
    return {
        **standard,
        "task": cfg.task.name,
        "split": split,
        "model": cfg.model.name,
        "adapter": str(adapter) if adapter else None,
        "examples": len(indices),
        "accuracy": float(rewards.mean()),  # the mean training reward (IFEval: fraction followed, strict)
        "stderr": float(rewards.std(ddof=1) / np.sqrt(len(rewards))) if len(rewards) > 1 else 0.0,
        "mean_new_tokens": tokens / len(indices),
        "max_new_tokens": cfg.generation.max_new_tokens,
    }


def compare_to_base(cfg: Config, adapter: Path, split: str, limit: int) -> tuple[PairedDifference, str]:
    """The task's headline metric (essa.report.heldout) of the base model and of `adapter` on the same
    first `limit` prompts of `split`, as a paired difference (after = the adapter), and its name."""
    from essa.run.rollout_pool import pool_from_config

    task = load_task(cfg.task)
    indices = list(range(min(limit, len(task.examples(split)))))
    lora, config = read_peft_adapter(adapter)
    basis = SVDLoRA.from_lora(lora, int(config["r"]), float(config.get("lora_alpha", config["r"])))
    pool = pool_from_config(cfg, basis)
    try:
        rows = [pool.evaluate(v, split, indices, details=True) for v in (None, np.zeros((1, basis.dim)))]
    finally:
        pool.shutdown()
    per_prompt = [task.headline_scores(r.rewards, r.details)[0] for r in rows]
    return paired_difference(per_prompt[0], per_prompt[1]), task.headline or "reward"


def format_table(metrics: dict) -> str:
    """The metrics as an aligned two-column table; rates in percent."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, float) and (key.endswith(("acc", "accuracy")) or key == "stderr"):
            shown = f"{100 * value:.2f}%"
        elif isinstance(value, float):
            shown = f"{value:.4g}"
        else:
            shown = "-" if value is None else str(value)
        rows.append((key, shown))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
