"""The coordinator: ask → evaluate → tell → log → validate → checkpoint, then export the best.

The strategy searches z in units of `SVDLoRA.step_scales()`; a candidate's singular-value offsets
are x = basis.offsets(z), so one dimensionless sigma fits every factor.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from essa.config import Config, resume_config, to_yaml
from essa.io import atomic_write_json, atomic_write_text, read_json
from essa.model.adapters import update_strength
from essa.model.svd_lora import SVDLoRA
from essa.model.warm_start import report_strength, warm_start
from essa.report.export import export_best, write_plot
from essa.report.forgetting import check_forgetting, check_task
from essa.report.heldout import compare_heldout
from essa.rewards.data import data_dir
from essa.rewards.task import Task
from essa.run.calibration import calibrate_sigma, calibration_prompts
from essa.run.checkpoint import BestPoint, Checkpoint, load_latest, save_checkpoint
from essa.run.inputs import check_inputs, fingerprint
from essa.run.preflight import Checked, preflight
from essa.run.run_dir import (
    create_run,
    hold_run,
    open_run,
    read_metrics,
    refuse_existing_run,
    search_seconds,
    truncate_metrics,
)
from essa.run.run_files import RunFiles
from essa.run.run_log import Progress, RunLog
from essa.run.sampler import PromptSampler
from essa.search import Strategy, candidate_fitness, make_strategy
from essa.stats import measure_signal, paired_difference
from essa.workers.pool import FAULT_COUNTS, Pool

PoolFactory = Callable[[Config, SVDLoRA], Pool]  # essa.run.rollout_pool.pool_from_config, or a test's fake


@dataclass
class Search:
    """Everything that moves during a run, restorable from a checkpoint."""

    basis: SVDLoRA  # a point z of the search is the adapter with offsets basis.offsets(z)
    strategy: Strategy
    sampler: PromptSampler
    best: BestPoint  # the best validated point so far (the warm start until a mean validates above it)
    generation: int  # generations completed
    seconds: float = 0.0  # their time with their validations, as metrics.jsonl records it (search.max_minutes)


def align(
    cfg: Config | None,
    run_dir: Path,
    resume: bool,
    changes: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    pool_factory: PoolFactory | None = None,
    allow_change: tuple[str, ...] = (),
    checked: Checked | None = None,
) -> Path:
    """Run (or continue) a search while holding the run directory's lock; returns the exported adapter.

    On resume, `changes` (dotted key -> value) and `overrides` (key=value) may change the saved
    config's RESUMABLE_KEYS (generations, engine placement, checkpointing); anything else is refused.
    The inputs recorded in RUN/inputs.json (data, reward, model) must be unchanged unless named in
    `allow_change` (essa.run.inputs). `checked`: what essa.run.preflight found for `cfg` (else it runs here).
    """
    if resume and not RunFiles(run_dir).config.is_file():
        open_run(run_dir)  # the clear "not an essa run directory" error, before anything is created
    with hold_run(run_dir):
        return _align(cfg, run_dir, resume, changes, overrides, pool_factory, tuple(allow_change), checked)


def _align(
    cfg: Config | None,
    run_dir: Path,
    resume: bool,
    changes: dict[str, Any] | None,
    overrides: list[str] | None,
    pool_factory: PoolFactory | None,
    allow_change: tuple[str, ...],
    checked: Checked | None,
) -> Path:
    """Run (or continue) a search; returns the exported adapter folder.

    One path for every run, new, resumed or finished: prepare (the run folder, its config and checks),
    search on the engines (generations, then the held-out comparison) unless a finished run owes them
    nothing, the forgetting check on its own engines, then the reward curve and the export.
    `pool_factory(cfg, basis)` builds the rollout pool (default: Ray actors with vLLM engines,
    essa.run.rollout_pool.pool_from_config); tests pass an in-process fake.
    """
    pool_factory = pool_factory or default_pool_factory()
    if resume:
        saved, basis = open_run(run_dir)
        cfg, changed = resume_config(saved, changes, overrides)  # validated; saved once the inputs pass
        done = load_latest(run_dir)
    else:
        assert cfg is not None  # a new run is given its config (essa.cli)
        changed, done, basis = {}, None, None
    if done is not None and search_finished(cfg, run_dir, done.generation) and not heldout_due(cfg, run_dir):
        best_z, ran = done.best.z, False  # finished: the engines owe it nothing
        if unused := [key for key in changed if key not in ("search.generations", "search.max_minutes")]:
            print(
                f"[essa] {run_dir} has nothing left to run; ignoring {', '.join(unused)}", file=sys.stderr, flush=True
            )
        if forgetting_due(cfg, run_dir):
            check_task(cfg)
        else:
            print(
                f"[essa] {run_dir} {finished_how(cfg, run_dir, done.generation)}; exporting its best point", flush=True
            )
    else:
        task, basis = prepare_run(cfg, run_dir, basis, changed, allow_change, checked)
        best_z, ran = search_on_engines(cfg, run_dir, basis, task, pool_factory, done)
    assert basis is not None  # a resumed run's, or the one prepare_run made
    if cfg.run.forgetting_task and (ran or forgetting_due(cfg, run_dir)):
        check_forgetting(cfg, basis, best_z, run_dir, pool_factory)  # its own engines: another task's
    write_plot(run_dir)
    return export_best(run_dir, RunFiles(run_dir).adapter)


def prepare_run(
    cfg: Config,
    run_dir: Path,
    resumed: SVDLoRA | None,
    changed: dict[str, tuple[Any, Any]],
    allow_change: tuple[str, ...],
    checked: Checked | None,
) -> tuple[Task, SVDLoRA]:
    """Everything before the engines: the checks (essa.run.preflight), then for a resumed run (`resumed`:
    its basis) its inputs checked and changes saved, for a new one its warm start and folder made;
    returns the task and the run's basis."""
    checked = checked or preflight(cfg)  # a bad task, data, model or reward fails before anything starts
    task, model_dir = checked.task, checked.model_dir
    inputs = fingerprint(task, cfg.task.reward, model_dir)
    if resumed is not None:
        check_inputs(run_dir, inputs, allow_change)  # the same data, reward and model, or a clear refusal
        if problem := machine_problem(cfg, run_dir):
            raise ValueError(problem)  # before the engines: the run is untouched
        if changed:  # the saved config says so from now on
            atomic_write_text(RunFiles(run_dir).config, to_yaml(cfg))
            print(
                "[essa] resuming with " + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()),
                flush=True,
            )
        basis = resumed
    else:
        if cfg.task.data_dir is None and (found := data_dir(None)) is not None:
            cfg.task.data_dir = str(found.resolve())  # $ESSA_DATA_DIR as it is now, not as it is at resume
        basis = start_run(cfg, run_dir, model_dir, inputs)
    if cfg.run.heldout_size:
        task.examples(cfg.run.heldout_split)  # an unknown split fails now, not after the run
    if cfg.run.forgetting_task:
        check_task(cfg)  # likewise the forgetting task and its data
    return task, basis


def search_on_engines(
    cfg: Config, run_dir: Path, basis: SVDLoRA, task: Task, pool_factory: PoolFactory, done: Checkpoint | None
) -> tuple[np.ndarray, bool]:
    """Start the engines; calibrate, validate the start, run the generations from `done` (the latest
    checkpoint, None for a new run), compare on held-out prompts; returns the best point and whether any generation ran (else a finished run resumed for
    the held-out comparison it owes)."""
    val_indices = list(range(min(cfg.task.val_size, len(task.examples("validation")))))
    try:
        pool = pool_factory(cfg, basis)
    except Exception:
        print(
            f"[essa] the engines did not start; {run_dir} is kept. Once the cause is fixed, continue it with "
            f"essa align --resume {run_dir} (--gpus, --workers, --tp and the engine placement keys in RESUMABLE_KEYS, "
            "such as engine.timeout_s and engine.kv_cache_gib, may change on resume)",
            file=sys.stderr,
            flush=True,
        )
        raise
    log = RunLog(run_dir, cfg.run.tensorboard, cfg.run.wandb_project, config=dataclasses.asdict(cfg))
    try:
        sigma = initial_sigma(cfg, run_dir, pool, basis, len(task.examples("train")))
        search = restore(cfg, basis, task, run_dir, sigma, done)
        if search.generation == 0 and search.best.validation is None:
            validate_start(pool, search, val_indices, log)
        resumed_at = search.generation
        run_generations(cfg, run_dir, pool, search, val_indices, log)
        ran = search.generation > resumed_at
        if cfg.run.heldout_size and (ran or heldout_due(cfg, run_dir)):
            compare_heldout(
                pool,
                task,
                basis.offsets(np.vstack([np.zeros(basis.dim), search.best.z])),
                cfg.run.heldout_split,
                cfg.run.heldout_size,
                run_dir,
            )
    finally:
        log.close()
        pool.shutdown()
    return search.best.z, ran


def heldout_due(cfg: Config, run_dir: Path) -> bool:
    """The run asks for a held-out comparison and has none yet (a finished run stopped during it)."""
    return bool(cfg.run.heldout_size) and not RunFiles(run_dir).heldout.is_file()


def search_finished(cfg: Config, run_dir: Path, generations_done: int) -> bool:
    """All its generations ran, or its search.max_minutes are spent."""
    return generations_done >= cfg.search.generations or out_of_time(
        cfg, search_seconds(read_metrics(run_dir), generations_done)
    )


def out_of_time(cfg: Config, seconds: float) -> bool:
    return cfg.search.max_minutes > 0 and seconds >= cfg.search.max_minutes * 60


def finished_how(cfg: Config, run_dir: Path, generations_done: int) -> str:
    if generations_done >= cfg.search.generations:
        return f"already ran {generations_done} generations"
    minutes = search_seconds(read_metrics(run_dir), generations_done) / 60
    return (
        f"spent its search.max_minutes={cfg.search.max_minutes:g} ({minutes:.1f} min, {generations_done} generations; "
        "a larger --max-minutes with --resume continues it)"
    )


def forgetting_due(cfg: Config, run_dir: Path) -> bool:
    """Likewise for the forgetting check."""
    return bool(cfg.run.forgetting_task) and not RunFiles(run_dir).forgetting.is_file()


def machine_problem(cfg: Config, resuming: Path | None = None) -> str | None:
    """Why this machine cannot run `cfg`'s engines (too few local GPUs, int4 on an AVX2-only CPU), or
    None: asked before a new run's folder exists (essa.cli) and before a resumed run starts engines."""
    from essa.model.quantize import local_cpu_problem
    from essa.workers.placement import local_gpu_problem

    return local_gpu_problem(cfg.engine.gpus, cfg.engine.ray_address) or local_cpu_problem(
        cfg.model.quantization, cfg.engine.gpus, cfg.engine.ray_address, resuming
    )


def default_pool_factory() -> PoolFactory:
    from essa.run.rollout_pool import pool_from_config

    return pool_from_config


def start_run(cfg: Config, run_dir: Path, model_dir: Path, inputs: dict) -> SVDLoRA:
    """A new run: its warm start built (maybe trained: essa.model.warm_start), then its folder laid out."""
    refuse_existing_run(run_dir)  # before an SFT start trains for half an hour
    lora, rank, lora_alpha = warm_start(cfg, model_dir)
    report_strength(update_strength(lora, lora_alpha / rank, model_dir), cfg.adapter.init)
    return create_run(cfg, run_dir, (lora, rank, lora_alpha), inputs)


def run_generations(
    cfg: Config, run_dir: Path, pool: Pool, search: Search, val_indices: list[int], log: RunLog
) -> None:
    total = cfg.search.generations
    progress = Progress(total, search.generation, search.best.validation)
    while search.generation < total and not search.strategy.stop() and not out_of_time(cfg, search.seconds):
        g, started, faults = search.generation, time.perf_counter(), fault_counts(pool)
        # ask: λ candidates, in units of the per-factor step scales
        z = search.strategy.ask()
        # evaluate: every candidate on the same mini-batch (common random numbers)
        batch = search.sampler.next()
        result = pool.evaluate(search.basis.offsets(z), "train", batch, generation=g)
        # tell: higher reward is better
        tell_started = time.perf_counter()
        search.strategy.tell(z, candidate_fitness(result.rewards, cfg.search.fitness))
        ask_tell = time.perf_counter() - tell_started
        search.generation = g + 1
        stopped = search.strategy.stop()  # converged: this generation is the last
        record = generation_record(g, result, search, ask_tell, time.perf_counter() - started)
        timed_out = out_of_time(cfg, search.seconds + record["time"]["total"])  # search.max_minutes spent
        last = search.generation == total or bool(stopped) or timed_out
        # validate the mean every k generations and at the end; keep the best (or go back to it)
        if search.generation % cfg.run.validate_every == 0 or last:
            validating = time.perf_counter()
            validate_mean(cfg, pool, search, val_indices, record, last)
            record["time"]["validate"] = round(time.perf_counter() - validating, 4)
        search.seconds += record["time"]["total"] + record["time"].get("validate", 0.0)
        record["faults"] = {k: n - faults[k] for k, n in fault_counts(pool).items()}  # this generation's
        # log first, then checkpoint: a kill in between redoes the generation, never loses its line
        log.append(record)
        if search.generation % cfg.run.checkpoint_every == 0 or last:
            save_checkpoint(run_dir, snapshot(search), keep=cfg.run.keep_checkpoints)
        progress.update(record, search.best.validation)
        if stopped:
            progress.write(
                f"[essa] the search converged after generation {search.generation} ({_reasons(stopped)}); stopping"
            )
        elif timed_out and search.generation < total:
            progress.write(
                f"[essa] search.max_minutes={cfg.search.max_minutes:g} spent after generation {search.generation} "
                f"({search.seconds / 60:.1f} min of search); stopping. essa align --resume {run_dir} --max-minutes M "
                "(a larger M) continues it"
            )
    progress.close()


def initial_sigma(cfg: Config, run_dir: Path, pool: Pool, basis: SVDLoRA, train_size: int) -> float:
    """search.sigma when set; else the calibrated step, measured once per run (essa.run.calibration)."""
    s = cfg.search
    if s.sigma is not None:
        return float(s.sigma)
    saved = RunFiles(run_dir).calibration
    if saved.is_file():
        return float(read_json(saved, what="step-size calibration")["sigma"])
    screen, confirm = calibration_prompts(train_size, cfg.task.batch_size, s.seed)
    cal = calibrate_sigma(
        lambda z, prompts: pool.evaluate(basis.offsets(z), "train", prompts).rewards,
        basis.dim,
        s.popsize,
        list(s.calibration_sigmas),
        s.calibration_snr,
        s.seed,
        screen,
        confirm,
        refuse_harmful=s.strategy != "es",
    )
    print(f"[essa] calibration: sigma = {cal.sigma:g} ({cal.reason})", flush=True)
    atomic_write_json(saved, cal.as_dict())
    return cal.sigma


def restore(cfg: Config, basis: SVDLoRA, task, run_dir: Path, sigma: float, ckpt: Checkpoint | None) -> Search:
    """A fresh search at generation 0, or the state of checkpoint `ckpt` (the run's latest)."""
    strategy = make_strategy(
        cfg.search.strategy,
        basis.dim,
        cfg.search.popsize,
        sigma,
        cfg.search.seed,
        mean_lr=cfg.search.mean_lr,
        mirrored=cfg.search.mirrored,
    )
    sampler = PromptSampler(len(task.examples("train")), cfg.task.batch_size, cfg.search.seed)
    search = Search(basis, strategy, sampler, BestPoint(np.zeros(basis.dim)), 0)
    if ckpt is not None:
        strategy.load_state_dict(ckpt.strategy)
        sampler.load_state_dict(ckpt.sampler)
        search.best, search.generation = ckpt.best, ckpt.generation
    truncate_metrics(run_dir, search.generation)
    search.seconds = search_seconds(read_metrics(run_dir), search.generation)
    return search


def snapshot(search: Search) -> Checkpoint:
    return Checkpoint(search.generation, search.strategy.state_dict(), search.sampler.state_dict(), search.best)


def validate_start(pool: Pool, search: Search, indices: list[int], log: RunLog) -> None:
    """The warm start's validation, the first best point, beside the base model's; says so when the
    start is worse."""
    scores = validate_scores(pool, search, search.best.z, indices)
    warm = float(scores.mean())
    search.best.validation, search.best.prompt_rewards = warm, scores.tolist()
    base = float(pool.evaluate(None, "validation", indices).scores[0])
    log.append({"generation": -1, "validation": warm, "validation_base": base})
    print(f"[essa] validation reward: base model {base:.3f}, warm start {warm:.3f}", flush=True)
    if warm < base:
        print(
            f"[essa] warning: the warm start validates below the base model ({warm:.3f} < {base:.3f}); the "
            "search starts from it and exports its best validated point, which may stay below the base",
            file=sys.stderr,
            flush=True,
        )


def validate_mean(cfg: Config, pool: Pool, search: Search, indices: list[int], record: dict, last: bool) -> None:
    """Validate the distribution mean into `record`; a new best is kept. With search.backtrack, a mean
    that validates worse than the best beyond noise (the paired 95% interval of its difference on the
    validation prompts lies below 0) sends the search back to the best point with a smaller step."""
    scores = validate_scores(pool, search, search.strategy.mean, indices)
    record["validation"] = float(scores.mean())
    if search.best.validation is None or record["validation"] > search.best.validation:
        search.best = BestPoint(search.strategy.mean, search.generation, record["validation"], scores.tolist())
    elif cfg.search.backtrack and not last and _worse_beyond_noise(search.best.prompt_rewards, scores):
        search.strategy.restart_at(search.best.z, search.strategy.sigma * cfg.search.backtrack)
        record["backtracked_to"] = search.best.generation


def _worse_beyond_noise(best_scores: list[float] | None, scores: np.ndarray) -> bool:
    if not best_scores or len(best_scores) != len(scores) or len(scores) < 2:
        return False  # nothing to pair with (a checkpoint from before scores were kept): never backtrack
    return paired_difference(np.asarray(best_scores), scores).high < 0


def validate_scores(pool: Pool, search: Search, z: np.ndarray, indices: list[int]) -> np.ndarray:
    """Per-prompt rewards of one point of the search on the fixed validation prompts."""
    return pool.evaluate(search.basis.offsets(z)[None, :], "validation", indices).rewards[0]


def fault_counts(pool: Pool) -> dict[str, int]:
    """The pool's fault counters so far (actors replaced, items retried, items timed out)."""
    return {k: int(pool.stats[k]) for k in FAULT_COUNTS}


def generation_record(g: int, result, search: Search, ask_tell: float, total: float) -> dict:
    scores = result.scores
    timings = {k: round(v, 4) for k, v in result.timings.items()}
    timings.update(ask_tell=round(ask_tell, 4), total=round(total, 4))
    return {
        "generation": g,
        "reward_mean": float(scores.mean()),
        "reward_max": float(scores.max()),
        "reward_min": float(scores.min()),
        **measure_signal(result.rewards).as_record(),
        "sigma": float(search.strategy.sigma),
        "tokens": int(result.tokens.sum()),
        "reward_errors": result.reward_errors,
        "time": timings,
    }


def _reasons(stopped: dict) -> str:
    return ", ".join(f"{name} = {value:.3g}" for name, value in stopped.items())
