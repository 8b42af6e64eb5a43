"""The forgetting check: does alignment on one task cost another? (`run.forgetting_task`)

After the search, the warm start, the exported point and the base model are scored on the first
`run.forgetting_size` prompts of the other task's test split, with that task's prompts, reward,
headline metric and generation length (its packaged YAML), and the same paired comparison as the
held-out one (essa.report.heldout), saved to RUN/forgetting.json. The engines are started again for it:
a pool serves one task's prompts. IFEval after aligning on GSM8K is the usual pairing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from essa.config import Config, load_config
from essa.report.heldout import compare_heldout
from essa.rewards.task import load_task
from essa.run.run_files import RunFiles


def forgetting_config(cfg: Config) -> Config:
    """`cfg` with the forgetting task's task and generation settings (its YAML), the same data folder."""
    other = load_config(cfg.run.forgetting_task)
    task = dataclasses.replace(other.task, data_dir=cfg.task.data_dir)
    return dataclasses.replace(cfg, task=task, generation=other.generation)


def check_task(cfg: Config):
    """Load the forgetting task now (a bad name or missing data fails before the run, not after)."""
    task = load_task(forgetting_config(cfg).task)
    task.examples("test")
    return task


def check_forgetting(cfg: Config, basis, best_z: np.ndarray, run_dir: Path, pool_factory) -> dict:
    other = forgetting_config(cfg)
    task = load_task(other.task)
    pool = pool_factory(other, basis)
    try:
        return compare_heldout(
            pool,
            task,
            basis.offsets(np.vstack([np.zeros(basis.dim), best_z])),
            "test",
            cfg.run.forgetting_size,
            run_dir,
            out=RunFiles(run_dir).forgetting,
            label=f"forgetting check, {other.task.name}",
        )
    finally:
        pool.shutdown()
