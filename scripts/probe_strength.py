"""How does a run's warm start score when its searched part is made stronger or weaker as a whole?

One direction of the search space is special: every searched singular value of both factors scaled
by the same c (offsets x = (c − 1)·s), which multiplies the searched part of every ΔW = B·A by c².
A search in hundreds of dimensions finds it only slowly when the reward is sparse; scoring it
directly says whether the warm start's own strength is a lever at all. One rollout worker (in this
process, no Ray), built from RUN's config and basis as the run's workers are; every point alone in
its call (batch-invariant, docs/benchmarks.md), on the first N prompts of a split, the task's headline
metric and mean reward printed per c.

    python scripts/probe_strength.py runs/demo-... --split validation --prompts 128 --scales 0.7 1 1.2 1.4 1.7
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.7, 1.0, 1.2, 1.4, 1.7])
    args = parser.parse_args()

    from essa.rewards.task import load_task
    from essa.run.rollout_pool import worker_spec
    from essa.run.run_dir import open_run
    from essa.workers.actor import RolloutWorker, WorkItem

    cfg, basis = open_run(args.run_dir)
    k = basis.searched
    top = np.concatenate([np.concatenate([fa.s[:k], fb.s[:k]]) for fa, fb in zip(basis.a, basis.b)])
    task = load_task(cfg.task)
    prompts = list(range(min(args.prompts, len(task.examples(args.split)))))
    worker = RolloutWorker(worker_spec(cfg, basis))
    try:
        print(f"run {args.run_dir}: {len(prompts)} {args.split} prompts, searched part of ΔW scaled by c²")
        for c in args.scales:
            result = worker.evaluate(WorkItem(-1, [0], ((c - 1.0) * top)[None], args.split, prompts, details=True))
            headline = task.headline_scores(result.rewards, result.details)[0]
            print(
                f"  c {c:<5g} {task.headline or 'reward'} {headline.mean():.4f}  reward {result.rewards[0].mean():.4f}  "
                f"tokens {int(result.tokens.sum())}",
                flush=True,
            )
    finally:
        worker.engine.close()


if __name__ == "__main__":
    main()
