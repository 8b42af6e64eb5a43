"""`essa status RUN_DIR`: where a run stands, read from its folder alone (no engine, no Ray).

Generation reached of the configured total, the best validation and when, the median time of the
last generations and the ETA from it, whether a process holds the run now (its lock; the kernel
drops it when the holder dies, so a crashed run shows as not running), and the last checkpoint.
"""

from __future__ import annotations

import fcntl
import os
import statistics
import time
from pathlib import Path

from essa.run.checkpoint import checkpoint_dirs, load_latest
from essa.run.run_dir import open_run, read_metrics, search_seconds
from essa.run.run_files import RunFiles

RECENT = 5  # generations the time per generation is the median of


def validations(rows: list[dict]) -> dict:
    """What metrics.jsonl says of validation: the base model's and the warm start's (the first line),
    [(generations completed, reward)] of the mean, and the lines of the generations run."""
    start = next((r for r in rows if r.get("generation") == -1), {})
    gens = [r for r in rows if r.get("generation", -1) >= 0 and "reward_mean" in r]
    return {
        "base": start.get("validation_base"),
        "start": start.get("validation"),
        "mean": [
            (r["generation"] + 1, r["validation"])
            for r in rows
            if r.get("generation", -1) >= 0 and r.get("validation") is not None
        ],
        "generations": gens,
    }


def best_point(run_dir: Path, v: dict | None = None) -> tuple[int, float] | None:
    """(generations completed, validation) of the point an export writes: the latest checkpoint's best,
    generation 0 being the warm start itself (ties keep the earlier point, as the coordinator does);
    before the first checkpoint, the best of metrics.jsonl's validations."""
    try:
        ckpt = load_latest(run_dir)
    except (OSError, ValueError):  # no checkpoint reads: what the metrics say
        ckpt = None
    if ckpt is not None and ckpt.best.validation is not None:
        return ckpt.best.generation, ckpt.best.validation
    v = v if v is not None else validations(read_metrics(run_dir))
    points = ([(0, v["start"])] if v["start"] is not None else []) + v["mean"]
    return max(points, key=lambda gv: gv[1]) if points else None


def run_status(run_dir: Path) -> dict:
    cfg, _ = open_run(run_dir)
    records = read_metrics(run_dir)
    v = validations(records)
    gens = v["generations"]
    logged = gens[-1]["generation"] + 1 if gens else 0
    try:
        ckpt = load_latest(run_dir)
    except (OSError, ValueError):
        ckpt = None
    done = max(logged, ckpt.generation if ckpt is not None else 0)  # a truncated log does not undo a checkpoint
    best = best_point(run_dir, v)
    recent = [float(r["time"]["total"]) for r in gens[-RECENT:] if (r.get("time") or {}).get("total")]
    per_gen = statistics.median(recent) if recent else None
    left = max(0, cfg.search.generations - done)
    spent = search_seconds(records, done)
    budget = cfg.search.max_minutes * 60  # 0: no time limit
    eta = per_gen * left if per_gen is not None else None
    if budget and eta is not None:
        eta = min(eta, max(0.0, budget - spent))
    checkpoints = checkpoint_dirs(run_dir)
    last = checkpoints[-1] if checkpoints else None
    return {
        "run": str(run_dir),
        "task": cfg.task.name,
        "model": cfg.model.name,
        "generation": done,
        "generations_logged": logged,
        "generations": cfg.search.generations,
        "reward_mean_last": gens[-1]["reward_mean"] if gens else None,
        "validation_start": v["start"],
        "validation_best": best[1] if best else None,
        "validation_best_after": best[0] if best else None,
        "seconds_per_generation": per_gen,
        "eta_seconds": eta,
        "search_seconds": spent,
        "max_minutes": cfg.search.max_minutes,
        "finished": left == 0 or bool(budget and spent >= budget),
        "held_by": lock_holder(run_dir),
        "last_checkpoint": last.name if last else None,
        "last_checkpoint_age_s": time.time() - (last / "state.json").stat().st_mtime if last else None,
        "exported": (RunFiles(run_dir).adapter / "adapter_model.safetensors").is_file(),
    }


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run's lock ("pid N on host H"), or None when no process does."""
    path = RunFiles(run_dir).lock
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return path.read_text().strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def format_status(s: dict) -> str:
    def num(value, fmt=".3f"):
        return "-" if value is None else format(value, fmt)

    def duration(seconds):
        if seconds is None:
            return "-"
        minutes, sec = divmod(int(round(seconds)), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"

    finished = s.get("finished", s["generation"] >= s["generations"])
    running = (
        f"yes, {s['held_by']}"
        if s["held_by"]
        else "no"
        if finished
        else f"no (continue it with: essa align --resume {s['run']})"
    )
    best = (
        "-"
        if s["validation_best"] is None
        else f"{num(s['validation_best'])}, "
        + (
            "the warm start itself: no validated mean beat it"
            if s["validation_best_after"] == 0
            else f"after generation {s['validation_best_after']}"
        )
    )
    rows = [
        ("run", s["run"]),
        ("task / model", f"{s['task']} / {s['model']}"),
        ("generation", f"{s['generation']} of {s['generations']}"),
        *(
            [("metrics.jsonl", f"holds only {s['generations_logged']} of them: lines were lost (the run is intact)")]
            if s.get("generations_logged", s["generation"]) < s["generation"]
            else []
        ),
        ("train reward (last)", num(s["reward_mean_last"])),
        ("validation", f"warm start {num(s['validation_start'])}, best {best}"),
        ("time per generation", duration(s["seconds_per_generation"])),
        (
            "search time",
            duration(s.get("search_seconds"))
            + (f" of {s['max_minutes']:g} min (search.max_minutes)" if s.get("max_minutes") else ""),
        ),
        ("ETA", "done" if finished else duration(s["eta_seconds"])),
        ("running", running),
        (
            "last checkpoint",
            f"{s['last_checkpoint']} ({duration(s['last_checkpoint_age_s'])} ago)"
            if s["last_checkpoint"]
            else "none yet",
        ),
        ("exported adapter", str(RunFiles(s["run"]).adapter) if s["exported"] else "not yet"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
