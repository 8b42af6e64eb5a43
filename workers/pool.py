"""The rollout pool: starts the Ray actors and spreads each population over them.

`--gpus 0` starts one CPU engine; `--gpus N` starts N actors with one GPU each. Ray joins an
existing cluster when `engine.ray_address` or $RAY_ADDRESS is set, otherwise starts a local one.
Candidates are split into contiguous chunks, one per actor; results come back in candidate order.
(A token-balanced queue, restarts of dead actors and tensor parallelism are not built yet.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from essa.workers.actor import RolloutWorker, WorkerSpec, WorkItem, WorkResult


@dataclass
class PoolResult:
    rewards: np.ndarray  # (candidates, prompts)
    tokens: np.ndarray  # (candidates,)
    timings: dict[str, float] = field(default_factory=dict)  # summed over actors
    reward_errors: int = 0

    @property
    def scores(self) -> np.ndarray:
        return self.rewards.mean(axis=1)


class PoolError(RuntimeError):
    pass


class RolloutPool:
    def __init__(self, spec: WorkerSpec, gpus: int, ray_address: str | None, timeout_s: float):
        import ray

        self.timeout_s = timeout_s
        address = ray_address or os.environ.get("RAY_ADDRESS")
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True)
        env = {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
        available = int(ray.cluster_resources().get("GPU", 0))
        if gpus > available:
            raise PoolError(
                f"--gpus {gpus} asks for {gpus} GPU engine slots but the Ray cluster has {available} GPU(s); "
                "use --gpus 0 to run on CPU, or join a cluster with GPUs (engine.ray_address / $RAY_ADDRESS)"
            )
        if gpus > 0:
            options = [dict(num_gpus=1, num_cpus=1) for _ in range(gpus)]
        else:
            options = [dict(num_cpus=max(1, int(ray.available_resources().get("CPU", 1))))]
        remote = ray.remote(RolloutWorker)
        self.actors = [remote.options(runtime_env={"env_vars": env}, **o).remote(spec) for o in options]
        self._get([a.ready.remote() for a in self.actors], what="starting the inference engines")

    def evaluate(self, vectors: np.ndarray | None, split: str, indices: list[int], generation: int = -1) -> PoolResult:
        """Score every candidate (row of `vectors`; None: the base model) on the same prompts."""
        if vectors is None:
            work = [WorkItem(generation, [0], None, split, list(indices))]
        else:
            chunks = np.array_split(np.arange(len(vectors)), min(len(self.actors), len(vectors)))
            work = [WorkItem(generation, c.tolist(), vectors[c], split, list(indices)) for c in chunks]
        refs = [actor.evaluate.remote(item) for actor, item in zip(self.actors, work)]
        results: list[WorkResult] = self._get(refs, what=f"generation {generation} ({split})")
        timings: dict[str, float] = {}
        for r in results:
            for key, value in r.timings.items():
                timings[key] = timings.get(key, 0.0) + value
        return PoolResult(
            rewards=np.concatenate([r.rewards for r in results]),
            tokens=np.concatenate([r.tokens for r in results]),
            timings=timings,
            reward_errors=sum(r.reward_errors for r in results),
        )

    def _get(self, refs, what: str):
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        try:
            return ray.get(refs, timeout=self.timeout_s)
        except GetTimeoutError as exc:
            raise PoolError(
                f"{what} did not finish within {self.timeout_s:.0f}s; raise engine.timeout_s "
                "or lower search.popsize / task.batch_size / generation.max_new_tokens"
            ) from exc
        except RayActorError as exc:
            raise PoolError(f"an inference worker died during {what}: {exc}") from exc
        except RayTaskError as exc:
            raise PoolError(f"an inference worker failed during {what}:\n{exc}") from exc

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def pool_from_config(cfg, basis) -> RolloutPool:
    """A pool for `cfg` (essa.config.Config) scoring candidates of `basis` (None: base model only)."""
    from dataclasses import replace

    from essa.rewards.data import data_dir
    from essa.workers.engine import resolve_mode

    gpu = cfg.engine.gpus > 0
    spec = WorkerSpec(
        # Workers may not share this process's environment: pin the data folder it resolves to.
        task=replace(cfg.task, data_dir=str(resolved) if (resolved := data_dir(cfg.task.data_dir)) else None),
        model=cfg.model.name,
        engine_options=dict(
            dtype=cfg.model.dtype,
            max_model_len=cfg.model.max_model_len,
            mode=resolve_mode(cfg.engine.mode, gpu),
            gpu=gpu,
            kv_cache_gib=cfg.engine.kv_cache_gib,
            gpu_memory_utilization=cfg.engine.gpu_memory_utilization,
            enforce_eager=cfg.engine.enforce_eager,
            max_loras=cfg.search.popsize,
            seed=cfg.search.seed,
        ),
        sampling=dict(
            temperature=cfg.generation.temperature,
            max_tokens=cfg.generation.max_new_tokens,
            seed=cfg.search.seed,
        ),
        basis_bytes=None if basis is None else basis.to_bytes(),
    )
    return RolloutPool(spec, cfg.engine.gpus, cfg.engine.ray_address, cfg.engine.timeout_s)
