"""Score a finished run's warm start and exported point again, on more (or other) held-out prompts.

The same comparison the run made at its end (essa.report.heldout: each point alone in its call, the task's
headline metric paired, the base model beside), on the first N prompts of a split, written to a file
of its own so the run's heldout.json is kept. Use it to put runs made with different
`run.heldout_size` on the same prompts, or to tighten an interval with every test prompt.

    python scripts/rescore_heldout.py runs/countdown-... --prompts 500 --out heldout-500.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--out", default=None, help="file name inside RUN (default heldout-SPLIT-N.json)")
    args = parser.parse_args()

    from essa.report.heldout import compare_heldout
    from essa.rewards.task import load_task
    from essa.run.checkpoint import load_latest
    from essa.run.rollout_pool import pool_from_config
    from essa.run.run_dir import open_run

    cfg, basis = open_run(args.run_dir)
    ckpt = load_latest(args.run_dir)
    if ckpt is None:
        raise SystemExit(f"{args.run_dir} has no checkpoint yet: nothing was exported to score")
    out = args.out or f"heldout-{args.split}-{args.prompts}.json"
    if (args.run_dir / out).exists():
        raise SystemExit(f"{args.run_dir / out} exists; name another file with --out")
    task = load_task(cfg.task)
    pool = pool_from_config(cfg, basis)
    try:
        compare_heldout(
            pool,
            task,
            basis.offsets(np.vstack([np.zeros(basis.dim), ckpt.best.z])),
            args.split,
            args.prompts,
            args.run_dir,
            file=out,
            label=f"rescored (generation {ckpt.best.generation})",
        )
    finally:
        pool.shutdown()


if __name__ == "__main__":
    main()
