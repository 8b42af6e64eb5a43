"""From a run's config to its rollout pool: the one place that reads the config for the workers.

Workers get what they need as arguments (`WorkerSpec`: task, model, engine options, sampling, the
basis); they never see essa.config.Config.
"""

from __future__ import annotations

from dataclasses import replace

from essa.config import Config
from essa.model.dtypes import engine_dtype
from essa.model.svd_lora import SVDLoRA


def worker_spec(cfg: Config, basis: SVDLoRA | None):
    """What every actor of a pool for `cfg` is built from (essa.workers.actor.WorkerSpec)."""
    from essa.rewards.data import data_dir
    from essa.workers.actor import WorkerSpec
    from essa.workers.engine import resolve_mode

    return WorkerSpec(
        # Workers may not share this process's environment: pin the data folder it resolves to.
        task=replace(cfg.task, data_dir=str(resolved) if (resolved := data_dir(cfg.task.data_dir)) else None),
        model=cfg.model.name,
        engine_options=dict(
            dtype=engine_dtype(cfg.model.dtype, cfg.engine.gpus > 0, cfg.model.quantization)[0],
            max_model_len=cfg.model.max_model_len,
            mode=resolve_mode(cfg.engine.mode),
            gpu=cfg.engine.gpus > 0,
            kv_cache_gib=cfg.engine.kv_cache_gib,
            gpu_memory_utilization=cfg.engine.gpu_memory_utilization,
            enforce_eager=cfg.engine.enforce_eager,
            deterministic=cfg.engine.deterministic,
            tensor_parallel_size=cfg.engine.tensor_parallel_size,
            max_loras=cfg.search.popsize,
            lora_kernel=cfg.engine.lora_kernel,
            seed=cfg.search.seed,
        ),
        sampling=dict(
            temperature=cfg.generation.temperature,
            max_tokens=cfg.generation.max_new_tokens,
            seed=cfg.search.seed,
        ),
        basis_bytes=None if basis is None else basis.to_bytes(),
        quantization=cfg.model.quantization,
    )


def pool_from_config(cfg: Config, basis: SVDLoRA | None, **spec_overrides):
    """A RolloutPool for `cfg` scoring candidates of `basis` (None: base model only).

    `spec_overrides` replace WorkerSpec fields (tests: `engine_factory`, `env`; essa sft: `sampling`).
    """
    from essa.workers.pool import RolloutPool

    e = cfg.engine  # validated by essa.config.validate
    spec = replace(worker_spec(cfg, basis), **spec_overrides)
    if why := engine_dtype(cfg.model.dtype, e.gpus > 0, cfg.model.quantization)[1]:
        print(f"[essa] engines load the model in {spec.engine_options['dtype']}: {why}", flush=True)
    return RolloutPool(
        spec,
        gpus=e.gpus,
        ray_address=e.ray_address,
        timeout_s=e.timeout_s,
        workers=e.workers,
        max_retries=e.max_retries,
        start_timeout_s=e.start_timeout_s,
        tensor_parallel=e.tensor_parallel_size,
    )
