"""Several runs of scripts/compare_grpo.py (one per seed) as one table and one figure.

    python scripts/summarize_comparisons.py OUT_SEED0 OUT_SEED1 OUT_SEED2 [--png all-seeds.png]

Reads each folder's results.json. Prints, per run: the warm start's held-out reward, each side's
final and best scored point (gain over the start, the wall time of the best), the time to the
run's common target (start + half the larger final gain) and the peak resident memory; then,
over the runs, the mean gain of each side with a 95% Student-t interval, and essa minus GRPO
paired by run. "best" is the best of the scored points, picked on the same held-out prompts it
is reported on (both sides alike): an optimistic figure; "final" is the point at the budget:
for essa run with --essa-validation, its exported best validated point (picked on validation
prompts, not on the reported ones). Runs that scored per-prompt rewards also get, per run, the
paired 95% interval of essa's final point minus GRPO's on the held-out prompts. Runs that scored the
task's own metric (Countdown, GSM8K: solved) get the same table for it, in points, and the work
each side did within its budget: completions and tokens generated (training, and essa's validations),
and where its wall clock went. With one scored
point per side (--points 1) the "best" column is that point, the mean at the budget, and the line
over the runs for "best" is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from essa.run.run_files import RunFiles

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling scripts, also when imported
import compare_grpo
import learning_curves

SIDES = ("essa", "grpo")


def read(folder: Path) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        sys.exit(f"summarize_comparisons: {path} not found (a compare_grpo.py --out folder that finished)")
    return json.loads(path.read_text())


def side_figures(results: dict, side: str) -> dict:
    start = results["start_reward"]
    # The best of the scored trajectory, as compare_grpo.py's own table takes it: essa's exported point
    # is a pick of that trajectory (reported as its final), not a further point to take the best over.
    points = [p for p in results["points"] if p["side"] == side and p.get("point") != "exported"]
    row = next(r for r in results["summary"] if r["side"] == side)
    best = max(points, key=lambda p: p["reward"])
    return {
        "final": row["final"] - start,
        "best": best["reward"] - start,
        "best_at_s": best["wall_s"],
        "best_label": best["label"],
        "to_target_s": row["time_to_target_s"],
        "rss": row["peak_rss_gib"],
        "trained": row["trained"],
        "scored": len(points),
    }


def exported_found_s(folder: Path, results: dict) -> float | None:
    """When essa's exported point first existed: the wall time of the checkpoint of its best validated
    generation (the clock of the scored means: a checkpoint's file time minus its point's wall_s).
    None without an exported point, a generation-0 export (the warm start) or the run's checkpoints."""
    points = [p for p in results["points"] if p["side"] == "essa"]
    exported = next((p for p in points if p.get("point") == "exported"), None)
    means = [p for p in points if p.get("point") == "mean"]
    if exported is None or not exported.get("best_generation") or not means:
        return None
    state = lambda g: RunFiles(folder / "essa").checkpoints / f"gen_{g:06d}" / "state.json"  # noqa: E731
    ref, best = state(means[-1]["generation"]), state(exported["best_generation"])
    if not (ref.is_file() and best.is_file()):
        return None
    return best.stat().st_mtime - (ref.stat().st_mtime - means[-1]["wall_s"])


def exported_table(folders: list[Path], runs: list[dict]) -> str:
    """Runs with essa's own validation (compare_grpo.py --essa-validation): its exported point against
    GRPO's final adapter, per run with paired 95% intervals on the held-out prompts."""
    lines = [
        "| seed | σ (calibrated) | start | essa exported: gain [95% CI] | best validated generation (found at) | GRPO final: gain "
        "[95% CI] | essa − GRPO [95% CI] | work in budget, essa / GRPO | peak RSS GiB, essa / GRPO |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ci = lambda d: f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"  # noqa: E731
    for folder, r in zip(folders, runs):
        paired, rows = r.get("paired", {}), {row["side"]: row for row in r["summary"]}
        exported = next((p for p in r["points"] if p.get("point") == "exported"), None)
        if exported is None or "essa - grpo" not in paired:
            continue
        found = exported_found_s(folder, r)
        when = f"{exported['best_generation']}" + (f" ({found:.0f} s)" if found is not None else "")
        calibration = RunFiles(folder / "essa").calibration
        sigma = f"{json.loads(calibration.read_text())['sigma']:g}" if calibration.is_file() else "set"
        lines.append(
            f"| {r['settings']['args']['seed']} | {sigma} | {r['start_reward']:.3f} | {ci(paired['essa - start'])} "
            f"| {when} | {ci(paired['grpo - start'])} | {ci(paired['essa - grpo'])} "
            f"| {rows['essa']['trained']} generations / {rows['grpo']['trained']} steps "
            f"| {rows['essa']['peak_rss_gib']:.2f} / {rows['grpo']['peak_rss_gib']:.2f} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def headline_table(runs: list[dict]) -> str:
    """The task's own metric per run (compare_grpo.py's paired_headline; Countdown, GSM8K: solved), in
    points: the start, each side's final point, their paired 95% intervals on the held-out prompts; then,
    over the runs, each gain's mean with a 95% Student-t interval."""
    scored = [r for r in runs if r.get("paired_headline")]
    if not scored:
        return ""
    ci = lambda d: f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"  # noqa: E731
    pct = lambda p: f"{100 * float(np.mean(p['headline'])):.1f}%"  # noqa: E731
    lines = [
        "| seed | start | essa final | GRPO final | essa − start | GRPO − start | essa − GRPO |",
        "|---|---|---|---|---|---|---|",
    ]
    gains: dict[str, list[float]] = {"essa - start": [], "grpo - start": [], "essa - grpo": []}
    for r in scored:
        paired = r["paired_headline"]
        start = next(p for p in r["points"] if p["side"] == "start")
        finals = {s: compare_grpo.final_point(r["points"], s) for s in SIDES}
        cells = [ci(paired[k]) if k in paired else "-" for k in gains]
        lines.append(
            f"| {r['settings']['args']['seed']} | {pct(start)} | "
            + " | ".join(pct(finals[s]) if finals[s] else "-" for s in SIDES)
            + f" | {' | '.join(cells)} |"
        )
        for k in gains:
            if k in paired:
                gains[k].append(100 * paired[k]["diff"])
    metric = scored[0].get("headline_metric") or "metric"
    lines.append("")
    lines.append(
        f"- {metric}, points, over {len(scored)} runs, mean [95% t]: "
        + "; ".join(f"{k} {interval(v, '+.1f')}" for k, v in gains.items() if v)
    )
    return "\n".join(lines)


def work(results: dict) -> dict[str, dict]:
    """Per side, from the logs compare_grpo.py keeps in results.json: completions and tokens generated in
    its budget and where the wall clock went. essa: the generations' completions (λ·B each) and tokens,
    its validations' completions (tokens are not logged for them), the seconds spent generating, in the
    update (ask/tell, adapters built and applied), validating, and the rest (start-up and engines). GRPO
    (TRL's logs): completions (prompts × group per step), completion tokens (mean length × completions),
    the seconds in its optimizer steps (rollouts and update together, TRL's step_time) and the rest."""
    out: dict[str, dict] = {}
    logs, runs = results.get("logs", {}), results.get("runs", {})
    essa_cmd = results.get("settings", {}).get("essa_command") or []
    option = lambda name: int(essa_cmd[essa_cmd.index(name) + 1]) if name in essa_cmd else None  # noqa: E731
    records = [m for m in logs.get("essa_metrics", []) if m.get("generation", -1) >= 0]
    if "essa" in runs and records:
        popsize, batch = option("--popsize"), option("--batch-size")
        val_size = next((int(a.split("=")[1]) for a in essa_cmd if str(a).startswith("task.val_size=")), 0)
        times = lambda key: sum(m["time"].get(key, 0.0) for m in records)  # noqa: E731
        validations = sum(1 for m in records if "validation" in m) + 2  # and the start's: warm start and base
        wall = runs["essa"]["wall_s"]
        out["essa"] = {
            "steps": len(records),
            "completions": len(records) * popsize * batch if popsize and batch else None,
            "tokens": sum(m.get("tokens", 0) for m in records),
            "validation_completions": validations * val_size,
            "generate_s": times("generate"),
            "update_s": times("ask_tell") + times("apply"),
            "validate_s": times("validate"),
            "other_s": wall - times("total") - times("validate"),
        }
    steps = [g for g in logs.get("grpo_logs", []) if "step_time" in g]
    if "grpo" in runs and steps:
        grpo = results.get("settings", {}).get("grpo", {})
        per_step = int(grpo.get("prompts_per_step", 0)) * int(grpo.get("num_generations", 0)) or None
        out["grpo"] = {
            "steps": len(steps),
            "completions": len(steps) * per_step if per_step else None,
            "tokens": round(sum(g["completions/mean_length"] * (per_step or 0) for g in steps)),
            "validation_completions": 0,
            "step_s": sum(g["step_time"] for g in steps),
            "other_s": runs["grpo"]["wall_s"] - sum(g["step_time"] for g in steps),
        }
    return out


def work_table(runs: list[dict]) -> str:
    """Each run's work per side (work()): steps, completions, tokens and the wall clock's split."""
    lines = [
        "| seed | side | steps | completions (+ validation) | tokens generated | wall clock split, s |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        for side, w in work(r).items():
            split = (
                f"generate {w['generate_s']:.0f}, update {w['update_s']:.0f}, validate {w['validate_s']:.0f}, "
                f"start-up and other {w['other_s']:.0f}"
                if side == "essa"
                else f"optimizer steps (rollouts + update) {w['step_s']:.0f}, start-up and other {w['other_s']:.0f}"
            )
            lines.append(
                f"| {r['settings']['args']['seed']} | {side} | {w['steps']} | {w['completions']} "
                f"(+ {w['validation_completions']}) | {w['tokens']} | {split} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def interval(values: list[float], fmt: str = "+.3f") -> str:
    """Mean [95% Student-t interval] as text, by learning_curves.interval (the mean alone for one run)."""
    mean, half = learning_curves.interval(values)
    return f"{mean:{fmt}}" if np.isnan(half) else f"{mean:{fmt}} [{mean - half:{fmt}}, {mean + half:{fmt}}]"


def table(runs: list[dict]) -> str:
    lines = [
        "| seed | start | essa final | essa best (when) | GRPO final | GRPO best (when) | time to target, essa / GRPO "
        "| work in budget, essa / GRPO | peak RSS GiB, essa / GRPO |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        e, g = (side_figures(r, s) for s in SIDES)
        when = " / ".join(
            f"{x['to_target_s']:.0f} s" if x["to_target_s"] is not None else "not reached" for x in (e, g)
        )
        lines.append(
            f"| {r['settings']['args']['seed']} | {r['start_reward']:.3f} | {e['final']:+.3f} | {e['best']:+.3f} "
            f"({e['best_label']}, {e['best_at_s']:.0f} s) | {g['final']:+.3f} | {g['best']:+.3f} ({g['best_label']}, "
            f"{g['best_at_s']:.0f} s) | {when} | {e['trained']} generations / {g['trained']} steps "
            f"| {e['rss']:.2f} / {g['rss']:.2f} |"
        )
    per = {s: [side_figures(r, s) for r in runs] for s in SIDES}
    lines.append("")
    for r in runs:
        if "essa - grpo" in r.get("paired", {}):
            d = r["paired"]["essa - grpo"]
            lines.append(
                f"- seed {r['settings']['args']['seed']}: essa's final point ({d['after_point']}) - GRPO's ({d['before_point']}) "
                f"on the same {d['n']} prompts: {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
            )
    # With one scored point per side (compare_grpo.py --points 1) "best" is that point, the mean at the
    # budget: no pick over a trajectory, so no line of its own that reads like one.
    keys = ("final", "best") if all(x["scored"] > 1 for side in per.values() for x in side) else ("final",)
    for key in keys:
        diff = [a[key] - b[key] for a, b in zip(per["essa"], per["grpo"])]
        lines.append(
            f"- gain at the {key} point over {len(runs)} runs, mean [95% t]: essa {interval([x[key] for x in per['essa']])}, "
            f"GRPO {interval([x[key] for x in per['grpo']])}; essa - GRPO paired by run {interval(diff)}"
        )
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for side, color, style in (("essa", "tab:blue", "o-"), ("grpo", "tab:orange", "s-")):
        for i, r in enumerate(runs):
            start = r["start_reward"]
            mine = [p for p in r["points"] if p["side"] == side and p.get("point") != "exported"]
            for p in r["points"]:
                if p["side"] == side and p.get("point") == "exported":  # essa's exported best validated point
                    ax.plot(
                        [p["wall_s"]],
                        [p["reward"] - start],
                        "*",
                        color=color,
                        markersize=12,
                        label="essa, exported (best validated)" if i == 0 else None,
                    )
            ax.plot(
                [0.0] + [p["wall_s"] for p in mine],
                [0.0] + [p["reward"] - start for p in mine],
                style,
                color=color,
                alpha=0.8,
                markersize=4,
                label=f"{'essa' if side == 'essa' else 'GRPO (TRL, LoRA)'}" if i == 0 else None,
            )
    ax.axhline(0.0, linestyle="--", color="gray", linewidth=0.8, label="warm start")
    first = runs[0]
    ax.set_xlabel("wall-clock seconds of training (process start to adapter saved)")
    ax.set_ylabel(f"held-out reward minus the warm start's (first {first['held_out_examples']} {first['split']})")
    seeds = ", ".join(str(r["settings"]["args"]["seed"]) for r in runs)
    commits = ", ".join(sorted({r["commit"] for r in runs}))
    ax.set_title(f"{first['task']} / {first['model']} / seeds {seeds} / {first['date'][:10]} / {commits}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="compare_grpo.py --out folders, one per seed")
    p.add_argument("--png", type=Path, help="draw every run's curves, as gains over its start, on one figure")
    args = p.parse_args()
    runs = [read(f) for f in args.folders]
    print(table(runs))
    if exported := exported_table(args.folders, runs):
        print("\nessa's exported best validated point against GRPO's final adapter:\n" + exported)
    if headline := headline_table(runs):
        print(f"\nthe task's own metric ({runs[0].get('headline_metric')}), final points, in points:\n" + headline)
    if done := work_table(runs):
        print("\nwork within the budget:\n" + done)
    if args.png:
        plot(runs, args.png)
        print(f"\nfigure: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
