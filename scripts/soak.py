"""Soak: a long run on a small budget, watching for what grows when nothing should.

    python scripts/soak.py --engine fake --generations 200 [--out soak-fake.json]
    python scripts/soak.py --engine real --generations 50  [--out soak-real.json]

`--engine fake` runs the real coordinator (CMA-ES, checkpoints every generation with pruning,
metrics, TensorBoard, validation) against FakePool (tests/essa/fake_pool.py: rewards from a
formula, no engine) on a two-layer stand-in model; `--engine real` runs the embedded default
model through vLLM in a Ray actor, as `essa align --gpus 0` does, at λ 4, B 2, 8 new tokens.
After every generation it samples:

- rss_mib: resident memory of this process and every process it started (Ray, the actor, vLLM's
  engine core), summed (shared pages once per process: an upper bound); per process too, and the
  summary names the processes that grew most after warm-up;
- open_files: file descriptors held by that process tree;
- scratch_mib: essa's candidate-adapter folders in RAM (/dev/shm/essa-engine-*);
- shm_used_mib: everything in /dev/shm (Ray's object store included);
- run_mib: the run directory on disk.

It prints a line every `--every` generations and at the end a table of first / last / peak and
the growth over the second half (per 100 generations, least squares), and exits 1 when
`check_bounds` fails: after the first quarter (warm-up: imports, caches, the engine), resident
memory may grow at most 64 MiB per 100 generations, open files at most 8 in all, essa's scratch
must be empty once the run ends, and the run directory must stay within what the kept
checkpoints and the per-generation log lines need (see `run_dir_bound`).
tests/reliability/test_soak.py runs the fake engine for 60 generations under the same bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RSS_GROWTH_MIB_PER_100 = 64.0
OPEN_FILES_GROWTH = 8
LOG_BYTES_PER_GENERATION = 64 * 1024  # a metrics line and its TensorBoard scalars take about 2 KiB


def _tree():
    import psutil

    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def sample(run_dir: Path, ignore: frozenset[str] = frozenset()) -> dict[str, float]:
    """One sample of the figures above (processes that exit while being read are skipped); scratch
    folders named in `ignore` (there before the soak began: another program's) are not counted."""
    import psutil

    from essa.io import ram_root
    from essa.workers.engine.scratch import SCRATCH_PREFIX

    rss, files, by_process = 0, 0, {}
    for proc in _tree():
        try:
            size = proc.memory_info().rss
            files += proc.num_fds()
            name = f"{proc.name()}[{proc.pid}]"
        except psutil.Error:
            continue
        rss += size
        by_process[name] = size / 2**20
    scratch = sum(
        p.stat().st_size
        for folder in ram_root().glob(f"{SCRATCH_PREFIX}*")
        if folder.name not in ignore
        for p in folder.rglob("*")
        if p.is_file()
    )
    shm = shutil.disk_usage("/dev/shm").used if os.path.isdir("/dev/shm") else 0
    run = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) if run_dir.exists() else 0
    mib = 2**20
    return {
        "rss_mib": rss / mib,
        "open_files": files,
        "scratch_mib": scratch / mib,
        "shm_used_mib": shm / mib,
        "run_mib": run / mib,
        "rss_by_process_mib": by_process,
    }


class SampledPool:
    """A pool wrapper that samples after every training generation."""

    def __init__(self, pool, run_dir: Path, samples: list, every: int, total: int, ignore: frozenset[str]):
        self.pool, self.run_dir, self.samples, self.every, self.total = pool, run_dir, samples, every, total
        self.ignore = ignore
        self.start = time.monotonic()

    def evaluate(self, vectors, split, indices, generation=-1, **kw):
        result = self.pool.evaluate(vectors, split, indices, generation, **kw)
        if split == "train" and generation >= 0:  # the pool counts generations from 0, the log from 1
            generation += 1
            row = {
                "generation": generation,
                "time_s": time.monotonic() - self.start,
                **sample(self.run_dir, self.ignore),
            }
            self.samples.append(row)
            if generation % self.every == 0 or generation == self.total:
                print(
                    f"[soak] gen {generation:4d}  rss {row['rss_mib']:8.1f} MiB  files {row['open_files']:4d}  "
                    f"scratch {row['scratch_mib']:6.2f} MiB  shm {row['shm_used_mib']:8.1f} MiB  "
                    f"run {row['run_mib']:6.2f} MiB  ({row['time_s']:.0f} s)",
                    flush=True,
                )
        return result

    def __getattr__(self, name):
        return getattr(self.pool, name)


def growth_per_100(samples: list[dict], key: str) -> float:
    """Least-squares slope of `key` against generation over the second half, per 100 generations."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    x = np.array([s["generation"] for s in half], float)
    y = np.array([s[key] for s in half], float)
    return float(np.polyfit(x, y, 1)[0] * 100)


def run_dir_bound(run_dir: Path, keep: int, generations: int) -> float:
    """MiB a run directory may use: its fixed files, `keep` checkpoints, and the log per generation."""
    from essa.run.run_files import RunFiles

    files = RunFiles(run_dir)
    fixed = sum(
        p.stat().st_size
        for path in (files.warm_start, files.basis, files.adapter)
        for p in ([path] if path.is_file() else path.rglob("*"))
        if p.is_file()
    )
    checkpoints = sorted(files.checkpoints.glob("gen_*"))
    one = max((sum(p.stat().st_size for p in c.rglob("*") if p.is_file()) for c in checkpoints), default=0)
    plot = files.plot.stat().st_size if files.plot.is_file() else 0
    return (fixed + 2 * plot + (keep + 1) * one + generations * LOG_BYTES_PER_GENERATION + 2**20) / 2**20


def check_bounds(samples: list[dict], final: dict, run_dir: Path, keep: int) -> list[str]:
    """What broke a bound (empty when none did); `final` is a sample taken after the run ended."""
    problems = []
    steady = samples[len(samples) // 4 :]
    rss = growth_per_100(steady, "rss_mib")
    if rss > RSS_GROWTH_MIB_PER_100:
        problems.append(f"resident memory grows {rss:.1f} MiB per 100 generations (bound {RSS_GROWTH_MIB_PER_100})")
    files = max(s["open_files"] for s in steady) - steady[0]["open_files"]
    if files > OPEN_FILES_GROWTH:
        problems.append(f"open files rose by {files} after warm-up (bound {OPEN_FILES_GROWTH})")
    if final["scratch_mib"] > 0:
        problems.append(f"{final['scratch_mib']:.2f} MiB of candidate adapters left in RAM scratch after the run")
    bound = run_dir_bound(run_dir, keep, samples[-1]["generation"])
    if final["run_mib"] > bound:
        problems.append(f"run directory {final['run_mib']:.2f} MiB > bound {bound:.2f} MiB")
    from essa.run.run_files import RunFiles

    checkpoints = len(list(RunFiles(run_dir).checkpoints.glob("gen_*")))
    if checkpoints > keep:
        problems.append(f"{checkpoints} checkpoints kept (run.keep_checkpoints={keep})")
    return problems


def soak(engine: str, generations: int, run_dir: Path, every: int = 10, keep: int = 3) -> tuple[list, dict]:
    """Run the soak; returns (per-generation samples, the sample after the run ended)."""
    from essa.config import load_config
    from essa.run.coordinator import align

    overrides = [
        f"search.generations={generations}",
        f"run.keep_checkpoints={keep}",
        "run.checkpoint_every=1",
        "run.validate_every=10",
        "search.sigma=0.5",
    ]
    if engine == "fake":
        sys.path.insert(0, str(ROOT / "tests" / "essa"))
        from fake_pool import FakePool, write_tiny_model

        model = write_tiny_model(run_dir.parent / "tiny-model")
        flags = {"model.name": str(model), "adapter.init": "principal", "search.popsize": 8}
        overrides += ["adapter.rank=2", "adapter.target_modules=[q_proj]", "task.batch_size=8", "task.val_size=16"]
        make_pool = FakePool
    else:
        from essa.run.rollout_pool import pool_from_config as make_pool

        flags = {"adapter.init": "principal", "search.popsize": 4, "engine.gpus": 0}
        overrides += ["task.batch_size=2", "task.val_size=4", "generation.max_new_tokens=8", "adapter.rank=2"]
    cfg = load_config("countdown", None, flags, overrides)  # problems made offline: no data files needed
    from essa.io import ram_root
    from essa.workers.engine.scratch import SCRATCH_PREFIX

    before = frozenset(p.name for p in ram_root().glob(f"{SCRATCH_PREFIX}*"))
    samples: list[dict] = []
    align(
        cfg,
        run_dir,
        resume=False,
        pool_factory=lambda c, b: SampledPool(make_pool(c, b), run_dir, samples, every, generations, before),
    )
    return samples, sample(run_dir, before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["fake", "real"], default="fake")
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--every", type=int, default=10, help="print a line every N generations")
    parser.add_argument("--run-dir", type=Path, help="default: a fresh temporary folder, removed at the end")
    parser.add_argument("--out", type=Path, help="write the samples and the verdict as JSON here")
    args = parser.parse_args()
    if args.generations < 8:
        parser.error("--generations must be at least 8 (the bounds skip a warm-up quarter)")
    temp = None
    if args.run_dir is None:
        temp = Path(tempfile.mkdtemp(prefix="essa-soak-"))
        args.run_dir = temp / "run"
    try:
        started = time.monotonic()
        samples, final = soak(args.engine, args.generations, args.run_dir, args.every)
        problems = check_bounds(samples, final, args.run_dir, keep=3)
        print(f"\n{args.engine} engine, {args.generations} generations, {time.monotonic() - started:.0f} s")
        print("| figure | first | last | peak | growth / 100 gens (2nd half) | after the run |")
        print("|---|---|---|---|---|---|")
        for key in ("rss_mib", "open_files", "scratch_mib", "shm_used_mib", "run_mib"):
            values = [s[key] for s in samples]
            print(
                f"| {key} | {values[0]:.1f} | {values[-1]:.1f} | {max(values):.1f} | "
                f"{growth_per_100(samples, key):+.2f} | {final[key]:.1f} |"
            )
        first, last = samples[len(samples) // 4]["rss_by_process_mib"], samples[-1]["rss_by_process_mib"]
        grown = sorted(((last[n] - first[n], n) for n in set(first) & set(last)), reverse=True)[:4]
        print("resident memory grown most after warm-up (MiB):", ", ".join(f"{n} {d:+.1f}" for d, n in grown))
        print("bounds:", "all held" if not problems else "; ".join(problems))
        if args.out:
            args.out.write_text(
                json.dumps(
                    {
                        "engine": args.engine,
                        "generations": args.generations,
                        "samples": samples,
                        "final": final,
                        "problems": problems,
                    },
                    indent=1,
                )
            )
        return 1 if problems else 0
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
