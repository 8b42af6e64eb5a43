"""A run's log: one metrics.jsonl line per record (the truth, what resume reads) and the same figures
as TensorBoard scalars in RUN/tensorboard/ (`tensorboard --logdir RUN/tensorboard`).

TensorBoard tags, per generation (step = generations completed):

    train/reward_mean, train/reward_max, train/reward_min, train/reward_spread
    train/snr                    between-candidate signal over its sampling noise (essa.stats)
    search/sigma
    speed/tokens_per_s           generated tokens over the generation's wall time
    time/<part>_s                total, generate, apply, score, ask_tell; validate (the mean's validation, when it ran)
    faults/<count>               restarts, retries, timeouts of the rollout pool in that generation
    validation/reward            when the generation validated (step 0: the warm start)
    validation/base_model        step 0 only

With `run.wandb_project`, the same scalars (same tags, same steps) also go to that Weights & Biases
project, as one W&B run per run directory (a resumed run continues it), its files in RUN/wandb/;
wandb's own settings apply (WANDB_MODE=offline, WANDB_API_KEY, WANDB_ENTITY), and W&B does not
capture the console.

`Progress` shows the generations: a tqdm bar on a terminal, one plain line per generation
otherwise (CI, nohup, a batch scheduler's log), where bar redraws would be noise.

A resumed run appends a new event file; generations redone after a kill appear twice with equal
values, and TensorBoard shows the newest.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from essa.run.run_dir import append_metrics
from essa.run.run_files import RunFiles


class RunLog:
    def __init__(
        self, run_dir: Path, tensorboard: bool = True, wandb_project: str | None = None, config: dict | None = None
    ):
        self.run_dir = Path(run_dir)
        self.writer = None
        self.wandb = start_wandb(self.run_dir, wandb_project, config) if wandb_project else None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                print(
                    "[essa] warning: tensorboardX is not installed; no TensorBoard log (pip install tensorboardX, "
                    "or run.tensorboard=false to silence this)",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                self.writer = SummaryWriter(str(RunFiles(self.run_dir).tensorboard), flush_secs=30)

    def append(self, record: dict) -> None:
        """The record to metrics.jsonl (fsynced), then to TensorBoard."""
        append_metrics(self.run_dir, record)
        if self.writer is not None:
            for tag, value in scalars(record).items():
                self.writer.add_scalar(tag, value, record["generation"] + 1)
        if self.wandb is not None and (values := scalars(record)):
            self.wandb.log(values, step=record["generation"] + 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def wandb_run_id(run_dir: Path) -> str:
    """One W&B run id per run directory, the same on every resume: its name and a hash of its path."""
    path = str(Path(run_dir).resolve())
    name = re.sub(r"[^A-Za-z0-9_-]", "-", Path(path).name)[:48]
    return f"{name}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def start_wandb(run_dir: Path, project: str, config: dict | None):
    import wandb  # checked by essa.config.validate: run.wandb_project needs it

    return wandb.init(
        project=project,
        id=wandb_run_id(run_dir),
        name=run_dir.name,
        dir=str(run_dir),
        config=config or {},
        resume="allow",
        settings=wandb.Settings(console="off"),
    )


def scalars(record: dict) -> dict[str, float]:
    """The TensorBoard scalars of one metrics record (see the module docstring)."""
    out = {}
    for key in ("reward_mean", "reward_max", "reward_min", "reward_spread", "snr"):
        if record.get(key) is not None:
            out[f"train/{key}"] = float(record[key])
    if record.get("sigma") is not None:
        out["search/sigma"] = float(record["sigma"])
    times = record.get("time") or {}
    for part, seconds in times.items():
        out[f"time/{part}_s"] = float(seconds)
    if times.get("total") and record.get("tokens") is not None:
        out["speed/tokens_per_s"] = float(record["tokens"]) / float(times["total"])
    for count, n in (record.get("faults") or {}).items():
        out[f"faults/{count}"] = float(n)
    if record.get("validation") is not None:
        out["validation/reward"] = float(record["validation"])
    if record.get("validation_base") is not None:
        out["validation/base_model"] = float(record["validation_base"])
    return out


class Progress:
    """The generations on the console: a bar when stderr is a terminal, else one line each."""

    def __init__(self, total: int, done: int, best_validation: float | None, interactive: bool | None = None):
        self.total = total
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.bar = None
        if self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc="essa align", unit="gen", dynamic_ncols=True)
            self.bar.set_postfix(best_val=_fmt(best_validation))

    def update(self, record: dict, best_validation: float | None) -> None:
        figures = dict(
            reward=f"{record['reward_mean']:.3f}",
            snr=record["snr"],
            sigma=f"{record['sigma']:.3g}",
            best_val=_fmt(best_validation),
        )
        if self.bar is not None:
            self.bar.set_postfix(**figures)
            self.bar.update(1)
            return
        extra = f", validation {record['validation']:.3f}" if record.get("validation") is not None else ""
        seconds = (record.get("time") or {}).get("total", 0.0)
        print(
            f"[essa] generation {record['generation'] + 1}/{self.total}: reward {figures['reward']}, snr "
            f"{figures['snr']}, sigma {figures['sigma']}{extra}, best validation {figures['best_val']} "
            f"({seconds:.1f} s)",
            flush=True,
        )

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
