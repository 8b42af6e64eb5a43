"""Validation reward of several runs against generation and wall time, grouped by condition.

    python scripts/learning_curves.py --group calibrated=runs/g-snull-seed* --group sigma0.5=runs/g-s0.5-seed* \\
        [--png curves.png]

For each group (one condition, several seeds): the validation reward of the distribution mean at
each validated generation (mean over seeds with a 95% Student-t interval), the gain over the warm
start (generation -1), the calibrated sigma where there is one, the mean snr, and the wall time
(sum of the generations' own times, calibration and validation excluded). Prints a markdown table;
with --png also draws the curves (matplotlib).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np


def read_run(run: Path) -> dict:
    from essa.config import from_yaml_file
    from essa.run.run_files import RunFiles

    files = RunFiles(run)
    lines = [json.loads(x) for x in files.metrics.read_text().splitlines() if x.strip()]
    start = next(m["validation"] for m in lines if m["generation"] == -1)
    gens = [m for m in lines if m["generation"] >= 0]
    elapsed = np.cumsum([m["time"]["total"] for m in gens])
    points = {m["generation"] + 1: m["validation"] for m in gens if "validation" in m}
    cal = files.calibration
    snrs = [float(m["snr"]) for m in gens if "snr" in m and m["snr"] != "inf"]
    return {
        "start": start,
        "points": points,
        "seconds": {g + 1: float(t) for g, t in zip(range(len(gens)), elapsed)},
        "sigma": json.loads(cal.read_text())["sigma"] if cal.is_file() else from_yaml_file(files.config).search.sigma,
        "snr": float(np.mean(snrs)) if snrs else None,
        "generations": len(gens),
    }


def interval(values: list[float]) -> tuple[float, float]:
    from essa.stats import t_975

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), t_975(len(v) - 1) * float(v.std(ddof=1)) / np.sqrt(len(v))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group", action="append", required=True, metavar="NAME=GLOB")
    p.add_argument("--png")
    args = p.parse_args()
    groups = {}
    for spec in args.group:
        name, pattern = spec.split("=", 1)
        runs = [read_run(Path(r)) for r in sorted(glob.glob(pattern)) if (Path(r) / "metrics.jsonl").is_file()]
        runs = [r for r in runs if r["points"]]  # a run still before its first validation
        if not runs:
            sys.exit(f"no runs match {pattern}")
        groups[name] = runs
    print(
        "| condition | seeds | sigma | mean snr | warm start | best validation | gain of best (95% CI) | "
        "final validation | gain of final (95% CI) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs in groups.items():
        starts = [r["start"] for r in runs]
        best = [max(r["points"].values()) for r in runs]
        final = [r["points"][max(r["points"])] for r in runs]
        gb, hb = interval([b - s for b, s in zip(best, starts)])
        gf, hf = interval([f - s for f, s in zip(final, starts)])
        sig = ", ".join(f"{r['sigma']:g}" for r in runs)
        snr = np.mean([r["snr"] for r in runs if r["snr"] is not None])
        print(
            f"| {name} | {len(runs)} | {sig} | {snr:.2f} | {np.mean(starts):.3f} | {np.mean(best):.3f} | "
            f"{gb:+.3f} ± {hb:.3f} | {np.mean(final):.3f} | {gf:+.3f} ± {hf:.3f} |"
        )
    print()
    for name, runs in groups.items():
        gens = sorted(set.intersection(*[set(r["points"]) for r in runs]))
        row = []
        for g in gens:
            m, h = interval([r["points"][g] - r["start"] for r in runs])
            secs = np.mean([r["seconds"].get(g, np.nan) for r in runs])
            row.append(f"gen {g} ({secs:.0f} s): {m:+.3f} ± {h:.3f}")
        print(f"{name}: gain over the warm start by generation: " + "; ".join(row))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name, runs in groups.items():
            gens = sorted(set.intersection(*[set(r["points"]) for r in runs]))
            stats = [interval([r["points"][g] - r["start"] for r in runs]) for g in gens]
            m, h = np.array([s[0] for s in stats]), np.nan_to_num(np.array([s[1] for s in stats]))
            secs = [np.mean([r["seconds"].get(g, np.nan) for r in runs]) for g in gens]
            for ax, x in zip(axes, ([0] + gens, [0] + secs)):
                ax.plot(x, np.r_[0, m], marker="o", label=f"{name} ({len(runs)} seeds)")
                ax.fill_between(x, np.r_[0, m - h], np.r_[0, m + h], alpha=0.2)
        axes[0].set_xlabel("generation")
        axes[1].set_xlabel("search wall time, s (calibration and validation excluded)")
        for ax in axes:
            ax.set_ylabel("validation reward − warm start")
            ax.axhline(0, color="gray", lw=0.8, ls="--")
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
