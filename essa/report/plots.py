"""Pictures of runs: reward against generation and against search time, from metrics.jsonl.

`plot_runs([RUN, ...], out.png)` draws one figure with two panels, every run in its own colour:
the candidates' mean training reward per generation (a line, the min-max band of the candidates
shaded) and the validation reward of the distribution mean (markers; at generation 0 the warm
start). The right panel puts the same curves against the search's cumulative wall time (the sum of
the generations' `time.total`; calibration and start-up are not in it). `essa plot` calls it, and
every `essa align` writes RUN/reward.png at its end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from essa.io import atomic_write_bytes
from essa.run.run_dir import read_metrics


def run_curves(run_dir: Path) -> dict:
    """Arrays of one run: generation, time, reward mean/min/max, and the validation points."""
    rows = read_metrics(Path(run_dir))
    gens = [r for r in rows if r.get("generation", -1) >= 0 and "reward_mean" in r]
    elapsed = np.cumsum([float((r.get("time") or {}).get("total", 0.0)) for r in gens])
    when = {r["generation"]: t for r, t in zip(gens, elapsed)}
    validation = [
        (r["generation"] + 1, when.get(r["generation"], 0.0), r["validation"])
        for r in rows
        if r.get("validation") is not None
    ]
    return {
        "generation": np.array([r["generation"] + 1 for r in gens]),
        "seconds": elapsed,
        "mean": np.array([r["reward_mean"] for r in gens]),
        "min": np.array([r.get("reward_min", r["reward_mean"]) for r in gens]),
        "max": np.array([r.get("reward_max", r["reward_mean"]) for r in gens]),
        "validation": validation,  # (generations completed, seconds, reward)
    }


def plot_runs(run_dirs: list[Path], out: Path, title: str | None = None) -> Path:
    """Write the figure of `run_dirs` to `out` (PNG, atomically); returns `out`."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    curves = [(Path(r), run_curves(Path(r))) for r in run_dirs]
    if not any(len(c["generation"]) or c["validation"] for _, c in curves):
        raise ValueError(f"nothing to plot: {', '.join(str(r) for r, _ in curves)} logged no generation yet")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for index, (run, c) in enumerate(curves):
        colour = f"C{index % 10}"
        label = run.resolve().name
        for ax, x, vx in ((axes[0], c["generation"], 0), (axes[1], c["seconds"], 1)):
            if len(x):
                ax.plot(x, c["mean"], color=colour, lw=1.5, label=f"{label}: train mean")
                ax.fill_between(x, c["min"], c["max"], color=colour, alpha=0.15, lw=0)
            if c["validation"]:
                points = np.array(c["validation"])
                ax.plot(points[:, vx], points[:, 2], "o--", color=colour, ms=5, lw=1, label=f"{label}: validation")
    axes[0].set_xlabel("generations completed")
    axes[1].set_xlabel("search wall time (s; calibration and start-up excluded)")
    axes[0].set_ylabel("reward")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title or "essa: candidates' training reward (band: min-max) and validation of the mean")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(out), buffer.getvalue())
    return Path(out)
