"""Generation throughput of the engine per weight dtype on this machine, side by side.

Each dtype gets its own vLLM engine in its own subprocess (one after the other: they would share
the cores), the same prompts and a fixed token budget (end-of-sequence ignored), after a warm-up
call. Prints tokens per second per dtype and each dtype's ratio to the first, plus what essa's
`model.dtype=auto` picks here. On a CPU without native bf16 (AVX2 only) bf16 is emulated;
this is the measurement behind `auto` choosing float32 there.

    python scripts/bench_dtype.py [--dtypes bfloat16 float32] [--prompts 64] [--tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(args) -> None:
    """One dtype, in this process: print a JSON line with its load time and tokens per second."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process (no spawn)
    from vllm import LLM, SamplingParams

    from essa.model.provision import resolve_model

    started = time.perf_counter()
    llm = LLM(model=str(resolve_model(args.model)), dtype=args.one, max_model_len=1024, seed=0)
    load_s = time.perf_counter() - started
    prompts = [f"Question {i}: what is {i} plus {3 * i}? Explain step by step." for i in range(args.prompts)]
    sampling = SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:4], sampling, use_tqdm=False)  # warm-up
    rates = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        llm.generate(prompts, sampling, use_tqdm=False)
        rates.append(args.prompts * args.tokens / (time.perf_counter() - started))
    print(json.dumps({"dtype": args.one, "load_s": load_s, "tok_s": rates}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this dtype in this process
    args = parser.parse_args()
    if args.one:
        return measure(args)

    from essa.model.dtypes import cpu_flags, engine_dtype

    flags = cpu_flags() or set()
    levels = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    print(
        f"CPU: {os.cpu_count()} cores, flags {' '.join(levels) or 'unknown'}; model.dtype=auto picks "
        f"{engine_dtype('auto', gpu=False)[0]} here",
        flush=True,
    )
    rows = []
    for dtype in args.dtypes:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            dtype,
            "--model",
            args.model,
            "--prompts",
            str(args.prompts),
            "--tokens",
            str(args.tokens),
            "--rounds",
            str(args.rounds),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("{")), None)
        if out.returncode or line is None:
            print(f"{dtype}: failed (exit {out.returncode})\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line))
    print(f"\n{args.prompts} prompts x {args.tokens} tokens, greedy, {args.rounds} rounds after a warm-up")
    print("dtype       load (s)   tok/s per round        ratio to first")
    mean = lambda row: sum(row["tok_s"]) / len(row["tok_s"])  # noqa: E731
    for row in rows:
        print(
            f"{row['dtype']:<10} {row['load_s']:8.1f}   {', '.join(f'{r:.1f}' for r in row['tok_s']):<22} "
            f"{mean(row) / mean(rows[0]):.2f}"
        )


if __name__ == "__main__":
    main()
