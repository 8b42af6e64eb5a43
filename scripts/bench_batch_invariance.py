"""Does a point's greedy completion depend on what else is in its batch? Measured on a run's own engine.

One rollout worker (in this process, no Ray), built from RUN's config and basis exactly as the run's
workers are (essa.run.rollout_pool.worker_spec), scores one point P of the run (its exported best point,
else the warm start) on the first N prompts of a split, four ways:

  alone      P by itself
  again      P by itself, a second call (is a call repeatable?)
  twice      P and P in one call (rows 0 and 1: two copies of one adapter side by side)
  crowd      P with K other candidates of the run's sigma in one call (a generation's situation)

and prints, for each pair of scorings, how many of the N completions differ and the task's headline
metric of each (solved fraction for Countdown and GSM8K), so a held-out comparison's noise floor is
known: two copies of one adapter that differ in one batch bound how far batch composition alone can
move a figure.

    python scripts/bench_batch_invariance.py runs/demo-... --split test --prompts 200 --crowd 3 [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--crowd", type=int, default=7, help="other candidates beside P in the crowd call")
    parser.add_argument("--kernel", help="engine.lora_kernel to use instead of the run's (shared, grouped, vllm)")
    parser.add_argument("--dtype", help="model.dtype to use instead of the run's (auto, bfloat16, float32)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    from essa.rewards.task import load_task
    from essa.run.checkpoint import load_latest
    from essa.run.rollout_pool import worker_spec
    from essa.run.run_dir import open_run
    from essa.run.run_files import RunFiles
    from essa.workers.actor import RolloutWorker, WorkItem

    cfg, basis = open_run(args.run_dir)
    if args.kernel:
        cfg.engine.lora_kernel = args.kernel
    if args.dtype:
        cfg.model.dtype = args.dtype
    ckpt = load_latest(args.run_dir)
    z = ckpt.best.z if ckpt is not None else np.zeros(basis.dim)
    sigma = (
        float(json.loads(RunFiles(args.run_dir).calibration.read_text())["sigma"])
        if cfg.search.sigma is None
        else cfg.search.sigma
    )
    others = np.random.default_rng(0).standard_normal((args.crowd, basis.dim)) * sigma + z
    cfg.search.popsize = max(cfg.search.popsize, args.crowd + 1)  # max_loras: room for the crowd
    task = load_task(cfg.task)
    n = min(args.prompts, len(task.examples(args.split)))
    prompts = list(range(n))
    worker = RolloutWorker(worker_spec(cfg, basis))
    calls = {"alone": z[None], "again": z[None], "twice": np.vstack([z, z]), "crowd": np.vstack([z, others])}
    texts, solved, seconds = {}, {}, {}
    try:
        for name, points in calls.items():
            started = time.perf_counter()
            result = worker.evaluate(
                WorkItem(
                    -1, list(range(len(points))), basis.offsets(points), args.split, prompts, details=True, texts=True
                )
            )
            seconds[name] = time.perf_counter() - started
            headline = task.headline_scores(result.rewards, result.details)
            rows = [0, 1] if name == "twice" else [0]
            for row in rows:
                key = name if name != "twice" else f"twice[{row}]"
                texts[key], solved[key] = result.texts[row], headline[row]
    finally:
        worker.engine.close()
    print(
        f"run {args.run_dir}, point: {'generation ' + str(ckpt.best.generation) if ckpt else 'warm start'}, "
        f"{n} {args.split} prompts, kernel {cfg.engine.lora_kernel}, dtype {cfg.model.dtype}"
    )
    for key in texts:
        print(f"  {key:<9} {task.headline or 'reward'} {solved[key].mean():.4f}")
    figures = {}
    for a, b in (("alone", "again"), ("twice[0]", "twice[1]"), ("alone", "twice[0]"), ("alone", "crowd")):
        differ = sum(x != y for x, y in zip(texts[a], texts[b]))
        moved = int(np.sum(solved[a] != solved[b]))
        figures[f"{a} vs {b}"] = {
            "completions_differ": differ,
            "headline_differs": moved,
            "prompts": n,
            "headline": [float(solved[a].mean()), float(solved[b].mean())],
        }
        print(f"  {a} vs {b}: {differ} of {n} completions differ, the headline metric on {moved}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"figures": figures, "seconds": seconds, "dtype": cfg.model.dtype, "kernel": cfg.engine.lora_kernel},
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
