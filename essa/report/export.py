"""Export: a run's best point as a PEFT LoRA folder (or a merged model), with its reward curve and
model card; what `essa export` and the end of `essa align` write."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from essa.model.adapters import ESSA_MARKER, write_peft_adapter
from essa.model.merge import check_merge_target, write_merged_model
from essa.model.provision import resolve_model
from essa.report.model_card import model_card
from essa.run.checkpoint import BestPoint, load_latest
from essa.run.run_dir import open_run, shared_base_name
from essa.run.run_files import RunFiles


def write_plot(run_dir: Path) -> None:
    """RUN/reward.png (essa.report.plots); a run without matplotlib still ends, with a warning."""
    try:
        from essa.report.plots import plot_runs

        print(f"[essa] reward curve: {plot_runs([run_dir], RunFiles(run_dir).plot)}", flush=True)
    except ImportError as exc:
        print(f"[essa] warning: no reward curve ({exc}); pip install matplotlib", file=sys.stderr, flush=True)
    except ValueError:
        pass  # no generation logged (a run resumed when already finished): nothing to draw


def export_best(run_dir: Path, out_dir: Path, merge: bool = False) -> Path:
    """Write the best point of a run (latest checkpoint) as a PEFT LoRA folder, or with `merge` as a full
    model folder: the base model with the adapter merged in (essa.model.merge; the bf16 base, whatever
    quantization the engines used)."""
    check_export_target(run_dir, out_dir)
    if merge:
        check_merge_target(out_dir)
    cfg, basis = open_run(run_dir)
    ckpt = load_latest(run_dir)
    if ckpt is None:
        print(f"[essa] {run_dir} has no checkpoint yet: exporting its warm start", flush=True)
    point = ckpt.best if ckpt is not None else BestPoint(np.zeros(basis.dim))
    lora = basis.factors(basis.offsets(point.z))
    best = {"generation": point.generation, "validation": point.validation}  # not the per-prompt rewards
    # the run's folder name, not its path: an export is for sharing and must not carry local paths
    provenance = {"run": Path(run_dir).resolve().name, "task": cfg.task.name, "best": best}
    plot, base = RunFiles(run_dir).plot, shared_base_name(cfg.model.name)
    files = {"README.md": model_card(run_dir, cfg, base, best, plot.is_file(), merged=merge).encode()}
    if plot.is_file():
        files[plot.name] = plot.read_bytes()
    if merge:
        files[ESSA_MARKER] = (
            json.dumps({**provenance, "merged": True, "written_by": "essa"}, indent=2) + "\n"
        ).encode()
        return write_merged_model(out_dir, resolve_model(cfg.model.name), lora, basis.lora_alpha / basis.rank, files)
    return write_peft_adapter(out_dir, lora, basis.rank, basis.lora_alpha, base, provenance, files)


def check_export_target(run_dir: Path, out_dir: Path) -> None:
    """An export may not be the run folder, hold it, or sit inside it (except the run's own adapter/)."""
    run, out = run_dir.resolve(), out_dir.resolve()
    if out == run or run.is_relative_to(out):
        raise ValueError(f"--out {out_dir} would replace the run directory {run_dir}; choose a folder outside it")
    if out.is_relative_to(run) and out != RunFiles(run).adapter:
        raise ValueError(f"--out {out_dir} is inside the run directory {run_dir}; choose a folder outside it")
