"""Population scoring throughput against plain base-model generation, measured side by side.

Per engine mode (`merge`, `lora`: one engine each, started one after the other), on the same
GSM8K prompts and the same fixed token budget (end-of-sequence ignored), for every B (prompts
per candidate) and λ (popsize):

- base: the λ·B sequences of a generation (the B prompts, λ times) as ONE generate call on the
  base model of the same engine: plain serving, the best case for the hardware. Each of the λ
  copies gets its own `cache_salt`, so copies cannot share prefix-cache blocks (the population's
  candidates cannot either: merge resets the cache per candidate, lora keys it per adapter);
  within a copy the shared chat/system prefix is cached, as it is within a candidate.
- population: one full essa generation through the worker's evaluate() (ask, apply each
  candidate, generate, score, tell), as the coordinator runs it but without Ray.

The ratio population/base tokens per second is what the ES machinery costs; the share of the
population's time outside generation (ask/tell, adapter build+load or merge, scoring) is its
overhead. Rounds alternate base and population so drift on a noisy machine hits both. On a
shared machine wall time swings with other people's load, so the table also gives the ratio of
CPU time per token (this process and vLLM's engine processes, user+system): `cpu ratio` =
base CPU s/token ÷ population CPU s/token, which other processes disturb far less. Usage:

    python scripts/bench_throughput.py --modes merge lora --popsize 4 16 32 --prompts 8 32 --tokens 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def cpu_description() -> str:
    """The CPU's model name, core count and the SIMD flags that decide its speed, for the figures' header."""
    import os
    from pathlib import Path

    from essa.model.dtypes import cpu_flags

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = cpu_flags() or set()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name or 'unknown model'}, {os.cpu_count()} cores, {' '.join(simd) or 'none of avx2/avx512/amx'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--modes", nargs="+", default=["merge", "lora"], choices=["merge", "lora"])
    parser.add_argument("--popsize", type=int, nargs="+", default=[4, 16, 32], help="λ values")
    parser.add_argument("--prompts", type=int, nargs="+", default=[8, 32], help="B values: prompts per candidate")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per prompt (fixed, EOS ignored)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--kv-cache-gib", type=float, default=2.0)
    parser.add_argument("--enforce-eager", action="store_true", help="skip torch.compile (faster start)")
    parser.add_argument("--max-num-seqs", type=int, help="vLLM scheduler: sequences per step (CPU default 256)")
    parser.add_argument("--max-num-batched-tokens", type=int, help="vLLM scheduler: tokens per step (CPU default 4096)")
    parser.add_argument(
        "--lora-kernel",
        nargs="+",
        choices=["shared", "grouped", "vllm"],
        default=["shared"],
        help="lora mode on CPU (one engine each): essa's shared-basis LoRA (the default), its grouped "
        "per-adapter matmuls, and/or vLLM's own torch ops",
    )
    parser.add_argument("--data-dir", help="folder with gsm8k/*.jsonl (default $ESSA_DATA_DIR)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float16", "float32"],
        help="weights of the engine (default auto, as essa align: float32 on a CPU without native bf16)",
    )
    args = parser.parse_args()
    import torch

    from essa.model.dtypes import engine_dtype

    args.dtype, why = engine_dtype(args.dtype, gpu=torch.cuda.is_available())
    print(f"CPU: {cpu_description()}", flush=True)
    print(f"engine dtype: {args.dtype}{f' ({why})' if why else ''}", flush=True)
    from essa.config import TaskConfig
    from essa.rewards.data import DataError
    from essa.rewards.task import load_task

    try:  # the workers read the prompts: a missing data folder is said here in one line, not in a worker's traceback
        load_task(TaskConfig(name="gsm8k", data_dir=args.data_dir)).examples("train")
    except DataError as exc:
        raise SystemExit(f"bench_throughput: {exc}") from None

    rows = []
    for mode in args.modes:
        for kernel in args.lora_kernel if mode == "lora" else ["-"]:
            rows += bench_mode(args, mode, kernel)

    print(
        f"\nT={args.tokens} new tokens per prompt (EOS ignored), rounds={args.rounds}, eager={args.enforce_eager}, "
        f"dtype={args.dtype}; "
        "lora = essa's shared-basis CPU LoRA, lora-g = its grouped per-adapter ops, lora-v = vLLM's own torch ops"
    )
    header = (
        f"{'mode':>6} {'λ':>3} {'B':>3} {'λ·B':>5} {'base tok/s':>10} {'essa tok/s':>10} {'ratio':>5} "
        f"{'outside gen':>11}   last generation (s): ask_tell apply generate score total"
    )
    print(header.replace("   last", " cpu ratio   last"))
    for r in rows:
        p = r["parts"]
        print(
            f"{r['mode']:>6} {r['popsize']:>3} {r['prompts']:>3} {r['popsize'] * r['prompts']:>5} {r['base']:>10.1f} "
            f"{r['pop']:>10.1f} {r['ratio']:>5.2f} {r['share']:>11.1%} {r['cpu_ratio']:>9.2f}   {p['ask_tell']:.2f} {p['apply']:.2f} "
            f"{p['generate']:.2f} {p['score']:.2f} {p['total']:.2f}"
        )


def bench_mode(args, mode: str, kernel: str) -> list[dict]:
    from essa.config import TaskConfig
    from essa.model.adapters import principal_init, read_base_weights
    from essa.model.provision import resolve_model
    from essa.model.svd_lora import SVDLoRA
    from essa.search import make_strategy
    from essa.workers.actor import RolloutWorker, WorkerSpec, WorkItem

    model_dir = resolve_model(args.model)
    basis = SVDLoRA.from_lora(
        principal_init(read_base_weights(model_dir, ["q_proj", "k_proj", "v_proj", "o_proj"]), 8, 0.05), 8, 8
    )
    vllm_args = {
        k: v
        for k, v in dict(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens).items()
        if v
    }
    spec = WorkerSpec(
        task=TaskConfig(name="gsm8k", data_dir=args.data_dir),
        model=args.model,
        engine_options=dict(
            mode=mode,
            dtype=args.dtype,
            kv_cache_gib=args.kv_cache_gib,
            max_loras=max(args.popsize),
            enforce_eager=args.enforce_eager,
            vllm_args=vllm_args,
            lora_kernel=kernel if mode == "lora" else "shared",
        ),
        sampling=dict(temperature=0.0, max_tokens=args.tokens, ignore_eos=True),
        basis_bytes=basis.to_bytes(),
    )
    label = {"vllm": "lora-v", "grouped": "lora-g"}.get(kernel, mode) if mode == "lora" else mode
    started = time.perf_counter()
    worker = RolloutWorker(spec)
    print(
        f"[{label}] engine start: {time.perf_counter() - started:.1f}s  eager={args.enforce_eager}  {vllm_args}",
        flush=True,
    )
    # warm-up: the first calls of an engine (and of the LoRA path) are slower
    warm = list(range(max(args.prompts)))
    worker.evaluate(WorkItem(-1, [0], None, "train", warm))
    worker.evaluate(WorkItem(-1, [0, 1], np.zeros((2, basis.dim)), "train", warm[:4]))

    rows = []
    for prompts in args.prompts:
        batch = list(range(prompts))
        for popsize in args.popsize:
            strategy = make_strategy("cma_auto", basis.dim, popsize, 0.5, 0)
            base_tps, pop_tps, shares, parts, cpu_ratios = [], [], [], [], []
            for _ in range(args.rounds):
                c = cpu_seconds()
                tps, tokens = base_throughput(worker, batch, popsize)
                base_cpu = (cpu_seconds() - c) / tokens
                base_tps.append(tps)

                c = cpu_seconds()
                t = time.perf_counter()
                z = strategy.ask()
                t_ask = time.perf_counter() - t
                result = worker.evaluate(WorkItem(0, list(range(popsize)), basis.offsets(z), "train", batch))
                t_tell = time.perf_counter()
                strategy.tell(z, result.rewards.mean(axis=1))
                ask_tell = t_ask + time.perf_counter() - t_tell
                total = time.perf_counter() - t
                pop_tps.append(result.tokens.sum() / total)
                cpu_ratios.append(base_cpu / ((cpu_seconds() - c) / result.tokens.sum()))
                shares.append((total - result.timings["generate"]) / total)
                parts.append({**result.timings, "ask_tell": ask_tell, "total": total})
            row = dict(
                mode=label,
                popsize=popsize,
                prompts=prompts,
                base=statistics.median(base_tps),
                pop=statistics.median(pop_tps),
                ratio=statistics.median(p / b for p, b in zip(pop_tps, base_tps)),
                share=statistics.median(shares),
                parts=parts[-1],
                cpu_ratio=statistics.median(cpu_ratios),
            )
            print(
                f"[{label}] λ={popsize} B={prompts}: base {row['base']:.1f} tok/s, essa {row['pop']:.1f} tok/s, "
                f"ratio {row['ratio']:.2f} (cpu {row['cpu_ratio']:.2f}), outside generation {row['share']:.1%}",
                flush=True,
            )
            rows.append(row)
    worker.engine.close()
    return rows


def cpu_seconds() -> float:
    """User+system CPU seconds of this process and its children (vLLM's engine processes)."""
    import psutil

    me = psutil.Process()
    return sum(sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)] if p.is_running())


def base_throughput(worker, batch: list[int], popsize: int) -> tuple[float, int]:
    """Tokens/s of the base model on the λ·B sequences as one generate call (see the docstring)."""
    from vllm import SamplingParams

    engine = worker.engine
    engine._merge(None) if engine.options.mode == "merge" and engine.basis is not None else None
    texts = [worker._prompt("train", i) for i in batch]
    prompts = [{"prompt": p, "cache_salt": f"copy-{k}-{time.monotonic_ns()}"} for k in range(popsize) for p in texts]
    start = time.perf_counter()
    outputs = engine.llm.generate(prompts, SamplingParams(**worker.sampling), use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return tokens / elapsed, tokens


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
