"""The coordinator: ask → evaluate → tell → log → validate → checkpoint, then export the best.

The strategy searches z in units of `SVDLoRA.step_scales()`; a candidate's singular-value offsets
are x = z · scales, so one dimensionless sigma fits every factor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from essa.checkpoint import Checkpoint, load_latest, save_checkpoint
from essa.config import Config, to_yaml
from essa.io import atomic_write_text
from essa.models import resolve_model
from essa.rewards.task import load_task
from essa.run_dir import append_metrics, create_run, hub_name, open_run, truncate_metrics
from essa.sampler import PromptSampler
from essa.search import make_strategy
from essa.svd_lora import SVDLoRA
from essa.adapters import write_peft_adapter


@dataclass
class Search:
    """Everything that moves during a run, restorable from a checkpoint."""

    basis: SVDLoRA
    scales: np.ndarray
    strategy: object
    sampler: PromptSampler
    best: dict  # {"generation", "validation"}
    best_z: np.ndarray
    generation: int  # generations completed


def align(cfg: Config | None, run_dir: Path, resume: bool, generations: int | None = None) -> Path:
    """Run (or continue) a search; returns the exported adapter folder."""
    if resume:
        cfg, basis = open_run(run_dir)
        if generations is not None:  # extending a run: the saved config says so from now on
            cfg.search.generations = generations
            atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    task = load_task(cfg.task)  # bad task/data fail first
    if not resume:
        basis = create_run(cfg, run_dir, resolve_model(cfg.model.name))
    search = restore(cfg, basis, task, run_dir)
    val_indices = list(range(min(cfg.task.val_size, len(task.examples("validation")))))

    from essa.workers.pool import pool_from_config

    pool = pool_from_config(cfg, basis)
    try:
        if search.generation == 0 and search.best["validation"] is None:
            search.best["validation"] = validate(pool, search, search.best_z, val_indices)
            append_metrics(run_dir, {"generation": -1, "validation": search.best["validation"]})
        run_generations(cfg, run_dir, pool, search, val_indices)
    finally:
        pool.shutdown()
    return export_best(run_dir, run_dir / "adapter")


def run_generations(cfg: Config, run_dir: Path, pool, search: Search, val_indices: list[int]) -> None:
    total = cfg.search.generations
    bar = tqdm(total=total, initial=search.generation, desc="essa align", unit="gen", dynamic_ncols=True)
    bar.set_postfix(best_val=_fmt(search.best["validation"]))
    while search.generation < total:
        g, started = search.generation, time.perf_counter()
        # ask: λ candidates, in units of the per-factor step scales
        z = search.strategy.ask()
        # evaluate: every candidate on the same mini-batch (common random numbers)
        batch = search.sampler.next()
        result = pool.evaluate(z * search.scales, "train", batch, generation=g)
        # tell: higher reward is better
        tell_started = time.perf_counter()
        search.strategy.tell(z, result.scores)
        ask_tell = time.perf_counter() - tell_started
        search.generation = g + 1
        # log
        record = generation_record(g, result, search, ask_tell, time.perf_counter() - started)
        # validate the mean every k generations and at the end; keep the best
        if search.generation % cfg.run.validate_every == 0 or search.generation == total:
            record["validation"] = validate(pool, search, search.strategy.mean, val_indices)
            if record["validation"] > search.best["validation"]:
                search.best = {"generation": search.generation, "validation": record["validation"]}
                search.best_z = search.strategy.mean
        # checkpoint every k generations and at the end
        if search.generation % cfg.run.checkpoint_every == 0 or search.generation == total:
            save_checkpoint(run_dir, snapshot(search))
        append_metrics(run_dir, record)
        bar.set_postfix(reward=f"{record['reward_mean']:.3f}", best_val=_fmt(search.best["validation"]))
        bar.update(1)
    bar.close()


def restore(cfg: Config, basis: SVDLoRA, task, run_dir: Path) -> Search:
    """A fresh search at generation 0, or the state of the latest checkpoint."""
    strategy = make_strategy(cfg.search.strategy, basis.dim, cfg.search.popsize, cfg.search.sigma, cfg.search.seed)
    sampler = PromptSampler(len(task.examples("train")), cfg.task.batch_size, cfg.search.seed)
    search = Search(basis, basis.step_scales(), strategy, sampler, {"generation": 0, "validation": None},
                    np.zeros(basis.dim), 0)
    ckpt = load_latest(run_dir)
    if ckpt is not None:
        strategy.load_state_dict(ckpt.strategy)
        sampler.load_state_dict(ckpt.sampler)
        search.best, search.best_z, search.generation = ckpt.best, ckpt.best_z, ckpt.generation
    truncate_metrics(run_dir, search.generation)
    return search


def snapshot(search: Search) -> Checkpoint:
    return Checkpoint(
        search.generation, search.strategy.state_dict(), search.sampler.state_dict(), dict(search.best), search.best_z
    )


def validate(pool, search: Search, z: np.ndarray, indices: list[int]) -> float:
    """Mean reward of one point of the search on the fixed validation prompts."""
    return float(pool.evaluate((z * search.scales)[None, :], "validation", indices).scores[0])


def generation_record(g: int, result, search: Search, ask_tell: float, total: float) -> dict:
    scores = result.scores
    timings = {k: round(v, 4) for k, v in result.timings.items()}
    timings.update(ask_tell=round(ask_tell, 4), total=round(total, 4))
    return {
        "generation": g,
        "reward_mean": float(scores.mean()),
        "reward_max": float(scores.max()),
        "reward_min": float(scores.min()),
        "sigma": float(search.strategy.sigma),
        "tokens": int(result.tokens.sum()),
        "reward_errors": result.reward_errors,
        "time": timings,
    }


def export_best(run_dir: Path, out_dir: Path) -> Path:
    """Write the best point of a run (latest checkpoint) as a PEFT LoRA folder."""
    check_export_target(run_dir, out_dir)
    cfg, basis = open_run(run_dir)
    ckpt = load_latest(run_dir)
    if ckpt is None:
        print(f"[essa] {run_dir} has no checkpoint yet: exporting its warm start", flush=True)
    z = ckpt.best_z if ckpt is not None else np.zeros(basis.dim)
    lora = basis.factors(z * basis.step_scales())
    best = ckpt.best if ckpt is not None else {"generation": 0, "validation": None}
    provenance = {"run": str(run_dir), "task": cfg.task.name, "best": best}
    return write_peft_adapter(out_dir, lora, basis.rank, basis.lora_alpha, hub_name(cfg.model.name), provenance)


def check_export_target(run_dir: Path, out_dir: Path) -> None:
    """An export may not be the run folder, hold it, or sit inside it (except the run's own adapter/)."""
    run, out = run_dir.resolve(), out_dir.resolve()
    if out == run or run.is_relative_to(out):
        raise ValueError(f"--out {out_dir} would replace the run directory {run_dir}; choose a folder outside it")
    if out.is_relative_to(run) and out != run / "adapter":
        raise ValueError(f"--out {out_dir} is inside the run directory {run_dir}; choose a folder outside it")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
