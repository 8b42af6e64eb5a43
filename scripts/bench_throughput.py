"""Population scoring throughput against plain base-model generation, measured side by side.

One engine, the same GSM8K prompts and the same fixed token budget (end-of-sequence ignored):

- base: the λ·B prompts of a generation as ONE batch on the base model (the best case for the
  hardware: no candidates, maximal batching);
- population: one full essa generation through the worker's evaluate() (ask, apply each
  candidate, generate, score, tell), as the coordinator runs it but without Ray.

The ratio population/base tokens per second is what the ES machinery costs; the share of time
outside generation (apply, score, ask+tell) is the overhead. Rounds alternate base and
population so drift on a noisy machine hits both. Usage:

    python scripts/bench_throughput.py --popsize 4 8 --prompts 16 --tokens 64 [--mode merge]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--popsize", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--prompts", type=int, default=16, help="prompts per candidate (B)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per prompt (fixed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", default="merge", choices=["merge", "lora"])
    parser.add_argument("--kv-cache-gib", type=float, default=2.0)
    parser.add_argument("--enforce-eager", action="store_true", help="skip torch.compile (faster start)")
    parser.add_argument("--data-dir", help="folder with gsm8k/*.jsonl (default $ESSA_DATA_DIR)")
    args = parser.parse_args()

    from essa.adapters import principal_init, read_base_weights
    from essa.config import TaskConfig
    from essa.models import resolve_model
    from essa.search import make_strategy
    from essa.svd_lora import SVDLoRA
    from essa.workers.actor import RolloutWorker, WorkerSpec, WorkItem

    model_dir = resolve_model(args.model)
    basis = SVDLoRA.from_lora(principal_init(read_base_weights(model_dir, ["q_proj", "k_proj", "v_proj", "o_proj"]), 8, 0.05), 8, 8)
    spec = WorkerSpec(
        task=TaskConfig(name="gsm8k", data_dir=args.data_dir), model=args.model,
        engine_options=dict(mode=args.mode, kv_cache_gib=args.kv_cache_gib, max_loras=max(args.popsize),
                            enforce_eager=args.enforce_eager),
        sampling=dict(temperature=0.0, max_tokens=args.tokens, ignore_eos=True),
        basis_bytes=basis.to_bytes(),
    )
    started = time.perf_counter()
    worker = RolloutWorker(spec)
    print(f"engine start: {time.perf_counter() - started:.1f}s  mode={args.mode}  eager={args.enforce_eager}  "
          f"B={args.prompts}  T={args.tokens}")
    batch = list(range(args.prompts))
    worker.evaluate(WorkItem(-1, [0], None, "train", batch))  # warm-up

    rows = []
    for popsize in args.popsize:
        strategy = make_strategy("cma_auto", basis.dim, popsize, 0.5, 0)
        scales = basis.step_scales()
        base_tps, pop_tps, shares, parts = [], [], [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            base = worker.evaluate(WorkItem(-1, [0], None, "train", batch * popsize))
            base_tps.append(base.tokens.sum() / (time.perf_counter() - t))

            t = time.perf_counter()
            z = strategy.ask()
            result = worker.evaluate(WorkItem(0, list(range(popsize)), z * scales, "train", batch))
            t_tell = time.perf_counter()
            strategy.tell(z, result.rewards.mean(axis=1))
            ask_tell = time.perf_counter() - t_tell
            total = time.perf_counter() - t
            pop_tps.append(result.tokens.sum() / total)
            overhead = result.timings["apply"] + result.timings["score"] + ask_tell
            shares.append(overhead / total)
            parts.append({**result.timings, "ask_tell": ask_tell, "total": total})
        ratio = statistics.median(p / b for p, b in zip(pop_tps, base_tps))
        rows.append((popsize, statistics.median(base_tps), statistics.median(pop_tps), ratio,
                     statistics.median(shares), parts[-1]))

    print(f"\n{'λ':>4} {'base tok/s':>11} {'essa tok/s':>11} {'ratio':>6} {'overhead':>9}   last generation (s)")
    for popsize, b, p, ratio, share, part in rows:
        detail = "  ".join(f"{k}={v:.2f}" for k, v in part.items())
        print(f"{popsize:>4} {b:>11.1f} {p:>11.1f} {ratio:>6.2f} {share:>8.1%}   {detail}")
    worker.engine.close()


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
