"""Checkpoints: `RUN/checkpoints/gen_NNNNNN/` holding `arrays.npz` and `state.json`, plus `latest`.

A checkpoint directory is written under a temporary name and renamed into place; the `latest`
pointer is rewritten atomically only after that, so a crash at any moment leaves the previous
checkpoint intact and `latest` never names a half-written one. Arrays go to npz (read back with
allow_pickle=False), everything else to JSON: no pickle anywhere.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from essa.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

FORMAT = 1


@dataclass
class Checkpoint:
    generation: int  # generations completed
    strategy: dict  # the strategy's state_dict (arrays and JSON values)
    sampler: dict
    best: dict  # {"generation", "validation"}
    best_z: np.ndarray  # the best point so far, in the strategy's coordinates


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    root = checkpoint_root(run_dir)
    name = f"gen_{ckpt.generation:06d}"
    final, tmp = root / name, root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = {f"strategy.{k}": v for k, v in ckpt.strategy.items() if isinstance(v, np.ndarray)}
    arrays["best_z"] = ckpt.best_z
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(tmp / "arrays.npz", buffer.getvalue())
    atomic_write_json(
        tmp / "state.json",
        {
            "format": FORMAT,
            "generation": ckpt.generation,
            "strategy": {k: v for k, v in ckpt.strategy.items() if not isinstance(v, np.ndarray)},
            "sampler": ckpt.sampler,
            "best": ckpt.best,
        },
    )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    atomic_write_text(root / "latest", name + "\n")
    return final


def load_latest(run_dir: Path) -> Checkpoint | None:
    """The checkpoint `latest` names, or None for a run that never checkpointed."""
    pointer = checkpoint_root(run_dir) / "latest"
    if not pointer.is_file():
        return None
    return load_checkpoint(checkpoint_root(run_dir) / pointer.read_text().strip())


def load_checkpoint(directory: Path) -> Checkpoint:
    """One checkpoint directory (`RUN/checkpoints/gen_NNNNNN`), e.g. to export an earlier point of a run."""
    directory = Path(directory)
    state = read_json(directory / "state.json", what="checkpoint state")
    if state.get("format") != FORMAT:
        raise ValueError(f"{directory} has checkpoint format {state.get('format')}, this essa reads {FORMAT}")
    try:
        with np.load(directory / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"checkpoint {directory} is corrupt ({exc}); point `latest` at an earlier gen_* directory to resume from it"
        ) from exc
    strategy = dict(state["strategy"])
    strategy.update({k[len("strategy.") :]: v for k, v in arrays.items() if k.startswith("strategy.")})
    return Checkpoint(state["generation"], strategy, state["sampler"], state["best"], arrays["best_z"])
