"""The `essa` command: align, sft, export, eval, status, plot."""

from __future__ import annotations

import argparse
import errno
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
    "max_minutes": "search.max_minutes",
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

    align = sub.add_parser(
        "align",
        help="search the singular values of a LoRA adapter with an evolution strategy (CMA-ES or antithetic ES)",
    )
    align.add_argument("--task", help="task name (gsm8k, ifeval, math500, countdown)")
    align.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run exactly where it stopped; --generations, --gpus, --workers and engine.* "
        "keys may change, nothing that changes the search",
    )
    align.add_argument(
        "--allow-change",
        nargs="+",
        choices=["data", "reward", "model"],
        default=[],
        help="with --resume: continue although these inputs changed since the run started",
    )
    align.add_argument("--config", help="YAML file merged over the task's defaults")
    align.add_argument("--gpus", type=int, help="engine slots: 0 runs on CPU (default 0)")
    align.add_argument("--workers", type=int, help="with --gpus 0: CPU engines, each on its own cores (default 1)")
    align.add_argument("--tensor-parallel-size", "--tp", type=int, help="GPUs per engine (default 1)")
    align.add_argument("--model", help="embedded model name, local folder or hub id")
    align.add_argument("--run-dir", help="where checkpoints, logs and the adapter go")
    align.add_argument("--generations", type=int, help="total generations (with --resume: extend the run)")
    align.add_argument(
        "--max-minutes",
        type=float,
        help="minutes of search (generations and validations, summed over resumes) after which the run finishes "
        "as at its last generation: held-out comparison, export (default 0: no limit; with --resume: extend it)",
    )
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
    sft.add_argument(
        "--max-examples", type=int, help="SFT pairs used (default: the task's sft.max_examples, 1024; Countdown 512)"
    )
    sft.add_argument("--out", help="also copy the adapter folder here")
    sft.add_argument(
        "--no-eval",
        action="store_true",
        help="skip scoring the base model and the adapter on task.val_size validation prompts",
    )
    sft.add_argument("overrides", nargs="*", metavar="key=value", help="any config key, e.g. sft.learning_rate=1e-4")

    export = sub.add_parser("export", help="write a run's best adapter as a PEFT LoRA folder")
    export.add_argument("run_dir")
    export.add_argument("--out", required=True)
    export.add_argument(
        "--merge",
        action="store_true",
        help="write the base model with the adapter merged in "
        "(a full model folder for transformers and vLLM) instead of the adapter",
    )
    export.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to the Hugging Face Hub")
    export.add_argument(
        "--public", action="store_true", help="with --push-to-hub: create the repository public (default private)"
    )

    status = sub.add_parser("status", help="where a run stands: generation, best validation, ETA, whether it runs")
    status.add_argument("run_dir")
    status.add_argument("--json", action="store_true", help="print the figures as JSON")

    plot = sub.add_parser("plot", help="PNG of reward against generation and search time, one or more runs")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", help="PNG file (default: RUN_DIR/reward.png for one run, reward.png for several)")

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
        hint = (
            "; key=value overrides go together at the end, after every --flag"
            if any("=" in e and not e.startswith("-") for e in extra)
            else ""
        )
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    previous = signal.signal(signal.SIGTERM, _terminated)  # as timeout, batch schedulers and containers stop us
    _received.clear()
    try:
        commands = {
            "align": cmd_align,
            "sft": cmd_sft,
            "export": cmd_export,
            "eval": cmd_eval,
            "status": cmd_status,
            "plot": cmd_plot,
        }
        return commands[args.command](args)
    except KeyboardInterrupt as exc:
        if _ray_head_lost():  # the watchdog said so and sent the SIGTERM: a failure, not a user's stop
            return 1
        # The handler's signal: a library that catches KeyboardInterrupt and raises a fresh one (Ray's
        # waits do) drops the exception's argument, and SIGTERM must not be reported as Ctrl-C.
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else _received.get("signal", signal.SIGINT)
        print(
            f"\ninterrupted ({signal.Signals(signum).name}); {AFTER_INTERRUPT.get(args.command, 'stopped')}",
            file=sys.stderr,
        )
        _forget_nested_keyboard_interrupts()
        return 128 + signum
    except (FileNotFoundError, FileExistsError) as exc:
        if exc.errno is not None:  # the operating system's, with a path: told as every OS error is
            print(f"essa: error: {describe_os_error(exc)}", file=sys.stderr)
            return 1
        print(f"essa: error: {exc}", file=sys.stderr)  # essa's own, with its fix
        return 2
    except (ValueError, RuntimeError) as exc:
        print(f"essa: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or foreign folder: the fix is outside essa
        print(f"essa: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


AFTER_INTERRUPT = {  # what an interrupted command leaves (every write is atomic)
    "align": "engines stopped, the last checkpoint is intact (essa align --resume RUN_DIR continues)",
    "sft": "stopped before the adapter was cached: nothing was written (a rerun trains it again)",
    "eval": "engines stopped; no metrics were written",
    "export": "stopped; an earlier export in --out, if any, is unchanged",
}


def describe_os_error(exc: OSError) -> str:
    """One line for a failed read or write: what failed, where, and what to do."""
    if exc.errno is None:  # not a file-system error: a connection (Ray, the Hub), told as it came
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}"
    where = f" ({exc.filename})" if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on that file system (or lower run.keep_checkpoints, or put the run elsewhere with --run-dir)"
    elif exc.errno == errno.EROFS:
        fix = "the file system is read-only: choose a writable folder (--run-dir, --out)"
    elif exc.errno == errno.ENOENT:
        fix = "a folder on that path does not exist, or files cannot be made there: check the path (--run-dir, --out)"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        fix = "essa may not write there: fix the folder's permissions or choose another (--run-dir, --out)"
    else:
        fix = "fix the cause named above"
    return (
        f"{reason}{where}: {fix}. Every file essa finished before this is intact (writes are atomic); "
        "an interrupted essa align continues with essa align --resume RUN_DIR"
    )


def _ray_head_lost() -> bool:
    if "essa.workers.ray_start" not in sys.modules:  # Ray was never started by this command
        return False
    from essa.workers.ray_start import ray_head_lost

    return ray_head_lost() is not None


def _forget_nested_keyboard_interrupts() -> None:
    """Keep the exit status essa chose after an interrupt it handled.

    CPython remembers a KeyboardInterrupt that ended any nested PyRun_* call (pybind11's py::exec
    inside an extension's import does this when the signal lands there) and, under `python -m`,
    ends the process by SIGINT once main returns, caught or not: a SIGTERM then reads as exit -2
    instead of 143. The flag is CPython's own; where it is not exported there is nothing to clear."""
    import ctypes

    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ValueError, AttributeError):
        pass


_received: dict[str, int] = {}  # the last signal essa's handler turned into KeyboardInterrupt


def _terminated(signum, frame):
    """SIGTERM unwinds like Ctrl-C: every `finally` runs, so engines and Ray are shut down."""
    _received["signal"] = signum
    raise KeyboardInterrupt(signum)


def cmd_align(args) -> int:
    from essa.config import load_config
    from essa.run.coordinator import align, machine_problem
    from essa.run.preflight import preflight
    from essa.run.run_dir import check_new_run_folder, new_run_dir, remove_unstarted

    if args.resume:
        if args.task or args.config:
            raise ValueError(
                "--resume continues a run with its saved config: drop --task and --config (flags such "
                "as --generations, --gpus and --workers, and the engine placement keys in RESUMABLE_KEYS, may change)"
            )
        run_dir = Path(args.resume)
        flags = {key: getattr(args, flag) for flag, key in ALIGN_FLAGS.items() if getattr(args, flag) is not None}
        adapter = align(
            None, run_dir, resume=True, changes=flags, overrides=args.overrides, allow_change=tuple(args.allow_change)
        )
    else:
        if args.data and args.task not in (None, "jsonl"):
            raise ValueError(
                f"--data brings your own prompts (task jsonl); it cannot be combined with --task {args.task}"
            )
        args.task = args.task or ("jsonl" if args.data else None)
        if not args.task:
            raise ValueError("essa align needs --task (e.g. --task gsm8k), --data FILE.jsonl, or --resume RUN_DIR")
        if args.allow_change:
            raise ValueError("--allow-change goes with --resume RUN_DIR: a new run records its inputs")
        if args.init not in (None, "sft", "principal"):
            args.init = str(run_export(Path(args.init), "--init"))
        flags = {key: getattr(args, flag) for flag, key in ALIGN_FLAGS.items()}
        cfg = load_config(args.task, args.config, flags, args.overrides)
        if problem := machine_problem(cfg):
            raise ValueError(problem)  # before the run folder exists: nothing to clean up or resume
        if cfg.run.run_dir:
            check_new_run_folder(Path(cfg.run.run_dir))
        checked = preflight(cfg)  # likewise: task, data, sizes, model files, prompt lengths, the reward
        run_dir = new_run_dir(cfg)
        print(f"[essa] run directory: {run_dir}", flush=True)
        try:
            adapter = align(cfg, run_dir, resume=False, checked=checked)
        except BaseException:
            if not cfg.run.run_dir:  # the folder new_run_dir made for this run: gone if the run never began
                remove_unstarted(run_dir)
            raise
    print_summary(run_dir, adapter)
    return 0


def print_summary(run_dir: Path, adapter: Path) -> None:
    """The end of a run as a small table: validation (base, warm start, final, best), held-out, files."""
    import json

    from essa.report.status import best_point, validations
    from essa.run.run_dir import read_metrics
    from essa.run.run_files import RunFiles

    v = validations(read_metrics(run_dir))
    table = []
    if v["start"] is not None:
        base = v["base"] if v["base"] is not None else float("nan")
        table.append(("validation, base model", f"{base:.3f}"))
        table.append(("validation, warm start", f"{v['start']:.3f}"))
    if v["mean"]:
        table.append(("validation, final mean", f"{v['mean'][-1][1]:.3f} (after generation {v['mean'][-1][0]})"))
    if (best := best_point(run_dir, v)) is not None:
        table.append(
            (
                "exported point, validation",
                f"{best[1]:.3f}, "
                + (
                    "the warm start itself: no validated mean beat it"
                    if best[0] == 0
                    else f"after generation {best[0]}"
                ),
            )
        )
    files = RunFiles(run_dir)
    for file, label in ((files.heldout, "held-out"), (files.forgetting, "forgetting check")):
        if not file.is_file():
            continue
        h = json.loads(file.read_text())
        if file == files.forgetting and h.get("task"):  # recorded since the check was first measured
            label = f"forgetting check, {h['task']}"
        table.append(
            (
                f"{label} {h['split']} ({h['prompts']}), warm start -> best",
                f"{h['before']:.3f} -> {h['after']:.3f}, {h['diff']:+.3f} [{h['low']:+.3f}, {h['high']:+.3f}]",
            )
        )
        if b := h.get("from_base"):  # absent in runs made before it was recorded
            table.append(
                (
                    f"{label} {h['split']} ({h['prompts']}), base model -> best",
                    f"{b['before']:.3f} -> {b['after']:.3f}, {b['diff']:+.3f} [{b['low']:+.3f}, {b['high']:+.3f}]",
                )
            )
    table.append(("best adapter", str(adapter)))
    if files.plot.is_file():
        table.append(("reward curve", str(files.plot)))
    width = max(len(k) for k, _ in table)
    print("[essa] summary\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in table), flush=True)


def cmd_sft(args) -> int:
    from essa.config import load_config
    from essa.model.provision import resolve_model
    from essa.model.sft import copy_adapter, describe, sft_adapter

    if args.data and args.task not in (None, "jsonl"):
        raise ValueError(f"--data brings your own prompts (task jsonl); it cannot be combined with --task {args.task}")
    task = args.task or ("jsonl" if args.data else None)
    if not task:
        raise ValueError("essa sft needs --task (e.g. --task gsm8k) or --data FILE.jsonl --reward FILE.py:function")
    flags = {
        "model.name": args.model,
        "task.data_dir": args.data_dir,
        "task.data_file": args.data,
        "task.reward": args.reward,
        "sft.max_examples": args.max_examples,
    }
    cfg = load_config(task, args.config, flags, args.overrides)
    adapter = sft_adapter(cfg, resolve_model(cfg.model.name))
    info = describe(adapter)
    print(
        f"[essa] SFT adapter: {adapter} ({info.get('pairs_used')} {info.get('source')} pairs, "
        f"{info.get('steps')} steps, loss {info.get('loss_first', float('nan')):.3f} → "
        f"{info.get('loss_last', float('nan')):.3f}, {info.get('train_seconds')} s)"
    )
    if args.out:
        print(f"[essa] copied to {copy_adapter(adapter, Path(args.out))}")
    if cfg.task.val_size and not args.no_eval:
        from essa.report.evaluate import compare_to_base

        diff, metric = compare_to_base(cfg, adapter, "validation", cfg.task.val_size)
        print(f"[essa] validation ({metric}), base model -> SFT adapter: {diff.describe(percent=metric != 'reward')}")
        if diff.high < 0:
            print("[essa] warning: this SFT adapter is worse than the base model on validation", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from essa.report.export import export_best
    from essa.report.hub import check_repo_id

    if not args.out.strip():
        raise ValueError("--out is empty: name the folder to export into, e.g. --out adapter/")
    if args.public and not args.push_to_hub:
        raise ValueError(
            "--public goes with --push-to-hub REPO (it makes that repository public); add it or drop --public"
        )
    if args.push_to_hub:
        check_repo_id(args.push_to_hub)  # before anything is written
    out = export_best(Path(args.run_dir), Path(args.out), merge=args.merge)
    print(f"[essa] exported {out}")
    if args.push_to_hub:
        from essa.report.hub import push_to_hub

        print(f"[essa] pushed to {push_to_hub(out, args.push_to_hub, private=not args.public)}")
    return 0


def run_export(path: Path, flag: str) -> Path:
    """An adapter folder; a run folder given instead stands for its export, RUN/adapter."""
    from essa.run.run_files import RunFiles

    run = RunFiles(path)
    if not run.config.is_file() or not run.basis.is_file():
        return path  # not a run folder: the adapter loader names any problem
    if (run.adapter / "adapter_config.json").is_file():
        print(f"[essa] {flag} {path} is a run folder: using its exported adapter {run.adapter}", flush=True)
        return run.adapter
    raise ValueError(
        f"{flag} {path} is a run folder without an exported adapter yet: run essa export {path} --out DIR "
        f"(or let the run finish, which writes {run.adapter}) and pass that folder"
    )


def cmd_status(args) -> int:
    import json

    from essa.report.status import format_status, run_status

    status = run_status(Path(args.run_dir))
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def cmd_plot(args) -> int:
    from essa.report.plots import plot_runs
    from essa.run.run_dir import open_run
    from essa.run.run_files import RunFiles

    runs = [Path(r) for r in args.run_dirs]
    for run in runs:
        open_run(run)  # "not an essa run directory", named, before anything is drawn
    plot = RunFiles(runs[0]).plot
    out = Path(args.out) if args.out else (plot if len(runs) == 1 else Path(plot.name))
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: the figure is a PNG; name a .png file")
    print(f"[essa] wrote {plot_runs(runs, out)}")
    return 0


def cmd_eval(args) -> int:
    from essa.config import load_config
    from essa.report.evaluate import evaluate, format_table

    flags = {
        "model.name": args.model,
        "engine.gpus": args.gpus,
        "task.data_dir": args.data_dir,
        "engine.tensor_parallel_size": args.tensor_parallel_size,
        "generation.max_new_tokens": args.max_new_tokens,
        "task.reward": args.reward,
        "model.quantization": args.quantization,
    }
    if args.limit is not None and args.limit < 1:
        raise ValueError(
            f"--limit {args.limit}: give a positive number of examples, or leave it out for the whole split"
        )
    if args.out is not None and (not args.out.strip() or Path(args.out).is_dir()):
        raise ValueError(f"--out {args.out!r}: name a file for the metrics (JSON), not a folder")
    cfg = load_config(args.task, None, flags, args.overrides)
    adapter = run_export(Path(args.adapter), "--adapter") if args.adapter else None
    metrics = evaluate(cfg, args.split, adapter, args.limit)
    print(format_table(metrics))
    if args.out:
        from essa.io import atomic_write_json

        atomic_write_json(args.out, metrics)
        print(f"[essa] metrics written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
