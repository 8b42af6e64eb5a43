"""Where the rollout engines run: the actors' resources, cores, GPUs and RAM.

`plan_actors` decides, before any actor starts, what each actor slot gets:

- `--gpus N`: N actors with one GPU each; with `engine.tensor_parallel_size` t > 1, N/t actors,
  each in a placement group of t one-GPU bundles on one node (`gpu_bundles`,
  `reserve_gpu_groups`): the actor holds one CPU of bundle 0 and no GPU, and vLLM inside it places
  its t workers in the bundles.
- `--gpus 0`: `engine.workers` CPU actors, one with every CPU or K bound to disjoint contiguous
  shares of this machine's cores (`split_cores`, VLLM_CPU_OMP_THREADS_BIND), after checking that
  K engines fit in free RAM (`cpu_memory_problem`).

The pool (pool.py) only starts, feeds and replaces actors with these options.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from essa.workers.errors import PoolError
from essa.workers.ray_start import init_ray

# RAM one CPU engine takes besides its KV cache and weights: the actor, vLLM's processes, torch
# (measured in docs/benchmarks.md, "Setup and a caveat about this machine"); kept a little below
# the measurement so that the check never refuses a run that would fit.
ENGINE_RUNTIME_GIB = 2.5


def cpu_kv_cache_gib(requested: float) -> int:
    """The KV cache a CPU engine reserves for engine.kv_cache_gib: vLLM's VLLM_CPU_KVCACHE_SPACE
    takes whole GiB, so the request is rounded, and at least 1."""
    return max(1, round(requested))


def cpu_memory_problem(
    engines: int, kv_cache_gib: float, weights_gib: float, available_gib: float | None
) -> str | None:
    """Why `engines` CPU engines would not fit in this machine's free RAM, or None when they fit."""
    need = engines * (kv_cache_gib + weights_gib + ENGINE_RUNTIME_GIB)
    if available_gib is None or need <= available_gib:
        return None
    return (
        f"{engines} CPU engine(s) need about {need:.1f} GiB of RAM ({kv_cache_gib:g} GiB KV cache "
        f"(engine.kv_cache_gib) + {weights_gib:.1f} GiB weights + ~{ENGINE_RUNTIME_GIB:g} GiB runtime each), but only "
        f"{available_gib:.1f} GiB is available; lower engine.workers or engine.kv_cache_gib, or free memory"
    )


def available_memory_gib() -> float | None:
    """MemAvailable of this machine (Linux), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def weights_gib(model: str) -> float:
    from essa.model.provision import resolve_model

    return sum(f.stat().st_size for f in resolve_model(model).glob("*.safetensors")) / 2**30


def split_cores(cores: list[int], parts: int) -> list[list[int]]:
    """`cores` cut into `parts` contiguous, disjoint runs whose sizes differ by at most one."""
    if parts > len(cores):
        raise PoolError(
            f"engine.workers={parts} CPU engines need at least one core each, but only {len(cores)} core(s) "
            f"are available to this process and the Ray cluster; set engine.workers to {len(cores)} or less"
        )
    return [[int(c) for c in part] for part in np.array_split(np.array(sorted(cores)), parts)]


def cpu_list(cores: list[int]) -> str:
    """vLLM's core-list syntax: runs as ranges, e.g. [0, 1, 2, 3, 6] -> "0-3,6"."""
    runs: list[list[int]] = []
    for c in sorted(cores):
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


SMALL_MACHINE_CORES = 4  # up to this many cores, one CPU engine binds them all (see actor_options)


def actor_options(
    gpus: int, workers: int, cores: list[int], cpus: int, env: dict[str, str], tensor_parallel: int = 1
) -> list[dict]:
    """Ray options (resources, runtime_env) of every actor slot; a replacement reuses its slot's.

    With tensor_parallel > 1 the GPUs are not the actor's but its placement group's (`gpu_bundles`).
    """
    if gpus > 0:
        gpu = 1 if tensor_parallel == 1 else 0
        return [dict(num_gpus=gpu, num_cpus=1, runtime_env={"env_vars": env}) for _ in range(gpus // tensor_parallel)]
    if workers == 1:  # one engine, every CPU
        if len(cores) <= SMALL_MACHINE_CORES and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            # vLLM's auto-binding keeps one core for its scheduler: half of a 2-core machine. All cores
            # measured faster here (docs/benchmarks.md); on larger machines one core is noise.
            env = {**env, "VLLM_CPU_OMP_THREADS_BIND": cpu_list(cores)}
        return [dict(num_cpus=max(1, cpus), runtime_env={"env_vars": env})]
    options = []
    for part in split_cores(cores, workers):
        bind = {"VLLM_CPU_OMP_THREADS_BIND": cpu_list(part), "OMP_NUM_THREADS": str(len(part))}
        options.append(dict(num_cpus=len(part), runtime_env={"env_vars": {**env, **bind}}))
    return options


def gpu_bundles(tensor_parallel: int) -> list[dict[str, float]]:
    """One tensor-parallel engine's placement group: a GPU per bundle (vLLM takes at most one per
    worker), plus in bundle 0 the CPU of the essa actor that drives the engine."""
    return [{"GPU": 1.0, "CPU": 1.0}] + [{"GPU": 1.0} for _ in range(tensor_parallel - 1)]


def local_gpu_problem(gpus: int, ray_address: str | None) -> str | None:
    """Why ``--gpus`` cannot be met on this machine, or None; checked before a run folder is made.

    Only for a local Ray (no address given): a cluster's GPUs are known once joined (plan_actors).
    GPUs are counted as Ray counts them on a node it starts: those found, at most CUDA_VISIBLE_DEVICES.
    """
    if gpus <= 0 or ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    try:
        from ray._private.accelerators import NvidiaGPUAcceleratorManager as gpus_of_node

        found = gpus_of_node.get_current_node_num_accelerators()
        visible = gpus_of_node.get_current_process_visible_accelerator_ids()
        found = found if visible is None else min(found, len(visible))
    except Exception:  # noqa: BLE001 - a Ray without this (private) helper: plan_actors still checks after start-up
        return None
    if gpus <= found:
        return None
    return (
        f"--gpus {gpus} asks for {gpus} GPUs but this machine has {found}; use --gpus {found} "
        f"{'(or --gpus 0 for CPU)' if found else 'to run on CPU'}, or join a cluster with GPUs "
        "(engine.ray_address / $RAY_ADDRESS)"
    )


def plan_actors(
    model: str,
    kv_cache_gib: float,
    gpus: int,
    workers: int,
    tensor_parallel: int,
    ray_address: str | None,
    env: dict[str, str],
) -> list[dict]:
    """Start or join Ray, check that the engines fit (GPUs in the cluster, RAM on this machine) and
    return the Ray options of every actor slot."""
    import ray

    init_ray(ray_address)
    available = int(ray.cluster_resources().get("GPU", 0))
    if gpus > available:
        raise PoolError(
            f"--gpus {gpus} asks for {gpus} GPUs but the Ray cluster has {available}; "
            "use --gpus 0 to run on CPU, or join a cluster with GPUs (engine.ray_address / $RAY_ADDRESS)"
        )
    if gpus == 0 and not (ray_address or os.environ.get("RAY_ADDRESS")):  # the engines share this machine's RAM
        problem = cpu_memory_problem(
            workers, cpu_kv_cache_gib(kv_cache_gib), weights_gib(model), available_memory_gib()
        )
        if problem:
            raise PoolError(problem)
    # vLLM's warnings on these machines are about its own build (no Triton, a recompile), not the
    # user's run: errors only, unless the user asks (VLLM_LOGGING_LEVEL=WARNING or INFO).
    env = {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "ERROR"), **env}
    # Core ranges are this machine's: K > 1 CPU engines are meant for one machine.
    cores = sorted(os.sched_getaffinity(0))[: int(ray.cluster_resources().get("CPU", 1))]
    cpus = one_node_cpus(ray.nodes(), ray.available_resources().get("CPU", 1))
    return actor_options(gpus, workers, cores, cpus, env, tensor_parallel)


def one_node_cpus(nodes: list[dict], available: float) -> int:
    """The CPUs one engine actor may ask for: those free in the cluster, but no more than its largest
    live node has (an actor runs on one node; asking for a whole cluster's CPUs is never placed)."""
    largest = max((n.get("Resources", {}).get("CPU", 0) for n in nodes if n.get("Alive")), default=available)
    return max(1, int(min(available, largest)))


def reserve_gpu_groups(slot_options: list[dict], tensor_parallel: int, timeout_s: float) -> list:
    """A placement group per actor slot (its options get the scheduling strategy); every one must be
    placed within `timeout_s` before any engine starts. Returns the groups, in slot order."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    groups = []
    for index, options in enumerate(slot_options):
        group = placement_group(
            gpu_bundles(tensor_parallel), strategy="STRICT_PACK", name=f"essa-engine-{index}-{os.getpid()}"
        )
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
        )
        groups.append(group)
    pending = [group.ready() for group in groups]
    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=timeout_s)
    if len(ready) < len(pending):
        for group in groups:
            ray.util.remove_placement_group(group)
        raise PoolError(
            f"{len(pending) - len(ready)} of {len(pending)} engines could not reserve {tensor_parallel} GPUs on "
            f"one node within engine.start_timeout_s={timeout_s:g}s: tensor parallelism needs "
            f"{tensor_parallel} free GPUs on the same node for each engine. Lower "
            "engine.tensor_parallel_size, or free GPUs (ray status shows what is taken)"
        )
    return groups
