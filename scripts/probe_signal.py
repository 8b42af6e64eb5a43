"""How candidates' outputs and rewards spread as a function of the step size sigma.

For one task and warm start: the same popsize standard-normal directions z are scaled by each
sigma, every candidate is scored on the same B train prompts (the engine's reward plus any
--reward plugins, computed on the same completions), and for each sigma the script prints the
between-candidate signal-to-noise ratio (essa.stats), the candidates' mean and max reward
against the warm start's, and the fraction of completions that differ from the warm start's.

    python scripts/probe_signal.py --task gsm8k --init principal --sigmas 0.25 0.5 1 2 4 \\
        --popsize 8 --batch-size 8 --max-new-tokens 64 --reward examples/rewards/dense.py:grounded
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="gsm8k")
    p.add_argument("--init", default="principal", help="sft, principal or a PEFT LoRA folder")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0])
    p.add_argument("--popsize", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reward", action="append", default=[], help="extra reward plugin(s) scored on the same texts")
    p.add_argument("--out", help="write every figure as JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()

    from essa.config import load_config
    from essa.model.provision import resolve_model
    from essa.model.svd_lora import SVDLoRA
    from essa.model.warm_start import warm_start
    from essa.rewards.plugins import load_reward
    from essa.rewards.task import load_task
    from essa.run.rollout_pool import pool_from_config
    from essa.stats import measure_signal

    flags = {
        "adapter.init": args.init,
        "task.batch_size": args.batch_size,
        "search.popsize": args.popsize,
        "generation.max_new_tokens": args.max_new_tokens,
    }
    cfg = load_config(args.task, None, flags, args.overrides)
    task = load_task(cfg.task)
    lora, rank, alpha = warm_start(cfg, resolve_model(cfg.model.name))
    basis = SVDLoRA.from_lora(lora, rank, alpha, cfg.adapter.alpha_fraction)
    rng = np.random.default_rng([args.seed, 1])
    prompts = rng.permutation(len(task.examples("train")))[: args.batch_size].tolist()
    examples = [task.examples("train")[i] for i in prompts]
    directions = rng.standard_normal((args.popsize, basis.dim))
    extra = {spec: load_reward(spec) for spec in args.reward}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# {datetime.date.today()} commit {commit}: {' '.join(sys.argv)}", flush=True)
    pool = pool_from_config(cfg, basis)
    rows = []
    try:
        start = pool.evaluate(np.zeros((1, basis.dim)), "train", prompts, texts=True)
        warm_texts = start.texts[0]
        for sigma in args.sigmas:
            t0 = time.perf_counter()
            res = pool.evaluate(basis.offsets(sigma * directions), "train", prompts, texts=True)
            changed = float(np.mean([[a != b for a, b in zip(row, warm_texts)] for row in res.texts]))
            figures = {"task": (res.rewards, start.rewards[0])}
            for spec, fn in extra.items():
                r = np.array([[fn(t, ex) for t, ex in zip(row, examples)] for row in res.texts])
                figures[spec] = (r, np.array([fn(t, ex) for t, ex in zip(warm_texts, examples)]))
            for name, (r, r0) in figures.items():
                s = measure_signal(r)
                means = r.mean(axis=1)
                rows.append(
                    {
                        "sigma": sigma,
                        "reward": name,
                        "snr": s.snr,
                        "spread": s.spread,
                        "start": float(r0.mean()),
                        "mean": float(means.mean()),
                        "max": float(means.max()),
                        "changed": changed,
                        "seconds": time.perf_counter() - t0,
                    }
                )
                print(
                    f"sigma {sigma:<5g} {name:<40} snr {s.snr:7.2f}  spread {s.spread:.3f}  start {r0.mean():.3f}"
                    f"  mean {means.mean():.3f}  max {means.max():.3f}  changed {changed:.0%}",
                    flush=True,
                )
    finally:
        pool.shutdown()
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
