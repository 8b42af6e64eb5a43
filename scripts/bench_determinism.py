"""Do the same candidates score the same twice? vLLM's engine core in-process against in its own process.

For each setting (`engine.deterministic` true: the engine core runs in the worker's process and a
generate call queues every request before the first step; false: vLLM's separate engine-core
process, which starts stepping as requests arrive), one engine (lora mode, eager) scores the same
λ candidates on the same B GSM8K prompts `--repeats` times, greedy, while `--load` busy processes
compete for the cores (a loaded machine is where arrival timing varies). Printed per setting: how
many of the λ·B completions differ from the first repeat's, in how many repeats, and the median
tokens/s of a repeat; then the ratio of the two settings' tokens/s, measured in the same run.

    python scripts/bench_determinism.py --popsize 8 --prompts 8 --tokens 48 --repeats 4 --load 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import numpy as np


def burn() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--popsize", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--load", type=int, default=2, help="busy processes running during the repeats")
    parser.add_argument("--sigma", type=float, default=2.0, help="candidate spread, in step scales")
    parser.add_argument(
        "--settings", nargs="+", default=["in-process", "own-process"], choices=["in-process", "own-process"]
    )
    parser.add_argument("--data-dir", help="folder with gsm8k/*.jsonl (default $ESSA_DATA_DIR)")
    args = parser.parse_args()

    from essa.config import TaskConfig
    from essa.model.adapters import principal_init, read_base_weights
    from essa.model.provision import resolve_model
    from essa.model.svd_lora import SVDLoRA
    from essa.workers.actor import RolloutWorker, WorkerSpec, WorkItem

    model_dir = resolve_model(args.model)
    basis = SVDLoRA.from_lora(
        principal_init(read_base_weights(model_dir, ["q_proj", "k_proj", "v_proj", "o_proj"]), 8, 0.05), 8, 8
    )
    x = basis.offsets(np.random.default_rng(0).normal(size=(args.popsize, basis.dim)) * args.sigma)
    prompts = list(range(args.prompts))
    speeds, firsts = {}, {}
    for setting in args.settings:
        spec = WorkerSpec(
            task=TaskConfig(name="gsm8k", data_dir=args.data_dir),
            model=args.model,
            engine_options=dict(
                mode="lora",
                kv_cache_gib=1.0,
                max_loras=args.popsize,
                enforce_eager=True,
                deterministic=setting == "in-process",
            ),
            sampling=dict(temperature=0.0, max_tokens=args.tokens),
            basis_bytes=basis.to_bytes(),
        )
        worker = RolloutWorker(spec)
        worker.evaluate(WorkItem(-1, [0], None, "train", prompts))  # warm-up
        burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.load)]
        for b in burners:
            b.start()
        try:
            texts, tps = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                result = worker.evaluate(WorkItem(0, list(range(args.popsize)), x, "train", prompts, texts=True))
                tps.append(result.tokens.sum() / (time.perf_counter() - started))
                texts.append([t for row in result.texts for t in row])
        finally:
            for b in burners:
                b.terminate()
            worker.engine.close()
        differing = [sum(a != b for a, b in zip(texts[0], t)) for t in texts[1:]]
        speeds[setting], firsts[setting] = statistics.median(tps), texts[0]
        print(
            f"[{setting}] completions differing from the first repeat, per later repeat: {differing} "
            f"of {len(texts[0])}; median {speeds[setting]:.1f} tok/s (load {args.load})",
            flush=True,
        )
    if len(speeds) == 2:
        a, b = args.settings
        same = sum(p == q for p, q in zip(firsts[a], firsts[b]))
        print(
            f"tok/s {a}/{b}: {speeds[a] / speeds[b]:.2f}; first repeats agree on {same} of {len(firsts[a])} completions"
        )


if __name__ == "__main__":
    main()
