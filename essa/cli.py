"""The `essa` command: align, export, eval."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

ALIGN_FLAGS = {  # CLI option → config key
    "gpus": "engine.gpus",
    "workers": "engine.workers",
    "tensor_parallel_size": "engine.tensor_parallel_size",
    "model": "model.name",
    "run_dir": "run.run_dir",
    "generations": "search.generations",
    "popsize": "search.popsize",
    "batch_size": "task.batch_size",
    "max_new_tokens": "generation.max_new_tokens",
    "init": "adapter.init",
    "quantization": "model.quantization",
    "data_dir": "task.data_dir",
    "reward": "task.reward",
    "data": "task.data_file",
    "prompt_field": "task.prompt_field",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    align = sub.add_parser("align", help="search the singular values of a LoRA adapter with CMA-ES")
    align.add_argument("--task", help="task name (gsm8k, ifeval, math500, countdown)")
    align.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where it stopped")
    align.add_argument("--config", help="YAML file merged over the task's defaults")
    align.add_argument("--gpus", type=int, help="engine slots: 0 runs on CPU (default 0)")
    align.add_argument("--workers", type=int, help="with --gpus 0: CPU engines, each on its own cores (default 1)")
    align.add_argument("--tensor-parallel-size", "--tp", type=int, help="GPUs per engine (default 1)")
    align.add_argument("--model", help="embedded model name, local folder or hub id")
    align.add_argument("--run-dir", help="where checkpoints, logs and the adapter go")
    align.add_argument("--generations", type=int, help="total generations (with --resume: extend the run)")
    align.add_argument("--popsize", type=int, help="candidates per generation (λ)")
    align.add_argument("--batch-size", type=int, help="prompts per candidate per generation (B)")
    align.add_argument("--max-new-tokens", type=int)
    align.add_argument("--init", help="warm start: 'sft' (default), 'principal' or a PEFT LoRA folder")
    align.add_argument("--quantization", choices=["none", "int8", "int4"], help="base weights (default none: bf16)")
    align.add_argument("--data-dir", help="folder with local task data (default $ESSA_DATA_DIR)")
    align.add_argument("--reward", help="reward plugin: FILE.py:function, module:function or entry-point name")
    align.add_argument("--data", help="your own prompts (JSONL); implies --task jsonl")
    align.add_argument("--prompt-field", help="with --data: the field holding the prompt (default 'prompt')")
    align.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. search.sigma=0.3")

    sft = sub.add_parser("sft", help="train (or find cached) the task's SFT warm-start adapter")
    sft.add_argument("--task", help="task name (gsm8k, ifeval, math500, countdown); --data implies jsonl")
    sft.add_argument("--config", help="YAML file merged over the task's defaults")
    sft.add_argument("--model", help="embedded model name, local folder or hub id")
    sft.add_argument("--data-dir", help="folder with local task data (default $ESSA_DATA_DIR)")
    sft.add_argument("--data", help="with --task jsonl: your prompts (pairs come from rejection sampling)")
    sft.add_argument("--reward", help="reward plugin for rejection sampling")
    sft.add_argument("--max-examples", type=int, help="SFT pairs used (default 1024)")
    sft.add_argument("--out", help="also copy the adapter folder here")
    sft.add_argument("--no-eval", action="store_true",
                     help="skip scoring the base model and the adapter on task.val_size validation prompts")
    sft.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. sft.learning_rate=1e-4")

    export = sub.add_parser("export", help="write a run's best adapter as a PEFT LoRA folder")
    export.add_argument("run_dir")
    export.add_argument("--out", required=True)
    export.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to the Hugging Face Hub")

    ev = sub.add_parser("eval", help="score the base model or an adapter on a task split")
    ev.add_argument("--task", required=True)
    ev.add_argument("--split", default="test", choices=["train", "validation", "test", "sft"])
    ev.add_argument("--adapter", help="PEFT LoRA folder (default: the base model)")
    ev.add_argument("--model", help="embedded model name, local folder or hub id")
    ev.add_argument("--limit", type=int, help="first N examples only")
    ev.add_argument("--gpus", type=int)
    ev.add_argument("--tensor-parallel-size", "--tp", type=int, help="GPUs per engine (default 1)")
    ev.add_argument("--max-new-tokens", type=int)
    ev.add_argument("--quantization", choices=["none", "int8", "int4"], help="base weights (default none: bf16)")
    ev.add_argument("--data-dir")
    ev.add_argument("--reward", help="reward plugin instead of the task's own")
    ev.add_argument("--out", help="also write the metrics as JSON here")
    ev.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        hint = ("; key=value overrides go together at the end, after every --flag"
                if any("=" in e and not e.startswith("-") for e in extra) else "")
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    previous = signal.signal(signal.SIGTERM, _terminated)  # as timeout, batch schedulers and containers stop us
    try:
        return {"align": cmd_align, "sft": cmd_sft, "export": cmd_export, "eval": cmd_eval}[args.command](args)
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        print(f"\ninterrupted ({signal.Signals(signum).name}); engines stopped, the last checkpoint is intact "
              "(essa align --resume RUN_DIR continues)", file=sys.stderr)
        return 128 + signum
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"essa: error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame):
    """SIGTERM unwinds like Ctrl-C: every `finally` runs, so engines and Ray are shut down."""
    raise KeyboardInterrupt(signum)


def cmd_align(args) -> int:
    from essa.config import load_config
    from essa.coordinator import align
    from essa.run_dir import new_run_dir

    if args.resume:
        ignored = [f for f in ALIGN_FLAGS if f != "generations" and getattr(args, f) is not None]
        if args.task or args.config or args.overrides or ignored:
            raise ValueError("--resume continues a run with its saved config; only --generations may change")
        run_dir = Path(args.resume)
        adapter = align(None, run_dir, resume=True, generations=args.generations)
    else:
        if args.data and args.task not in (None, "jsonl"):
            raise ValueError(f"--data brings your own prompts (task jsonl); it cannot be combined with --task {args.task}")
        args.task = args.task or ("jsonl" if args.data else None)
        if not args.task:
            raise ValueError("essa align needs --task (e.g. --task gsm8k), --data FILE.jsonl, or --resume RUN_DIR")
        flags = {key: getattr(args, flag) for flag, key in ALIGN_FLAGS.items()}
        cfg = load_config(args.task, args.config, flags, args.overrides)
        run_dir = new_run_dir(cfg)
        print(f"[essa] run directory: {run_dir}", flush=True)
        adapter = align(cfg, run_dir, resume=False)
    print_summary(run_dir, adapter)
    return 0


def print_summary(run_dir: Path, adapter: Path) -> None:
    from essa.run_dir import read_metrics

    validations = [(m["generation"], m["validation"]) for m in read_metrics(run_dir) if "validation" in m]
    if validations:
        best = max(validations, key=lambda gv: gv[1])
        print(f"[essa] validation reward: warm start {validations[0][1]:.3f}, "
              f"final mean {validations[-1][1]:.3f}, best {best[1]:.3f} (after generation {best[0] + 1})")
    print(f"[essa] best adapter: {adapter}", flush=True)


def cmd_sft(args) -> int:
    from essa.config import load_config
    from essa.models import resolve_model
    from essa.sft import copy_adapter, describe, sft_adapter

    if args.data and args.task not in (None, "jsonl"):
        raise ValueError(f"--data brings your own prompts (task jsonl); it cannot be combined with --task {args.task}")
    task = args.task or ("jsonl" if args.data else None)
    if not task:
        raise ValueError("essa sft needs --task (e.g. --task gsm8k) or --data FILE.jsonl --reward FILE.py:function")
    flags = {"model.name": args.model, "task.data_dir": args.data_dir, "task.data_file": args.data,
             "task.reward": args.reward, "sft.max_examples": args.max_examples}
    cfg = load_config(task, args.config, flags, args.overrides)
    adapter = sft_adapter(cfg, resolve_model(cfg.model.name))
    info = describe(adapter)
    print(f"[essa] SFT adapter: {adapter} ({info.get('pairs_used')} {info.get('source')} pairs, "
          f"{info.get('steps')} steps, loss {info.get('loss_first', float('nan')):.3f} → "
          f"{info.get('loss_last', float('nan')):.3f}, {info.get('train_seconds')} s)")
    if args.out:
        print(f"[essa] copied to {copy_adapter(adapter, Path(args.out))}")
    if cfg.task.val_size and not args.no_eval:
        from essa.evaluate import compare_to_base

        diff = compare_to_base(cfg, adapter, "validation", cfg.task.val_size)
        print(f"[essa] validation, base model -> SFT adapter: {diff.describe()}")
        if diff.high < 0:
            print("[essa] warning: this SFT adapter is worse than the base model on validation", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from essa.coordinator import export_best

    out = export_best(Path(args.run_dir), Path(args.out))
    print(f"[essa] exported {out}")
    if args.push_to_hub:
        from huggingface_hub import upload_folder

        try:
            upload_folder(repo_id=args.push_to_hub, folder_path=str(out))
        except Exception as exc:
            raise RuntimeError(f"push to {args.push_to_hub} failed ({type(exc).__name__}: {exc}); "
                               f"the adapter is saved at {out}") from exc
        print(f"[essa] pushed to https://huggingface.co/{args.push_to_hub}")
    return 0


def cmd_eval(args) -> int:
    from essa.config import load_config
    from essa.evaluate import evaluate, format_table

    flags = {"model.name": args.model, "engine.gpus": args.gpus, "task.data_dir": args.data_dir,
             "engine.tensor_parallel_size": args.tensor_parallel_size,
             "generation.max_new_tokens": args.max_new_tokens, "task.reward": args.reward,
             "model.quantization": args.quantization}
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: give a positive number of examples, or leave it out for the whole split")
    cfg = load_config(args.task, None, flags, args.overrides)
    metrics = evaluate(cfg, args.split, Path(args.adapter) if args.adapter else None, args.limit)
    print(format_table(metrics))
    if args.out:
        from essa.io import atomic_write_json

        atomic_write_json(args.out, metrics)
        print(f"[essa] metrics written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
