"""Checkpoints: `RUN/checkpoints/gen_NNNNNN/` holding `arrays.npz` and `state.json`, plus `latest`.

A checkpoint directory is written under a temporary name and renamed into place (files and
directory fsynced); the `latest` pointer is rewritten atomically only after that, so a crash at
any moment leaves the previous checkpoint intact and `latest` never names a half-written one.
Arrays go to npz (read back with allow_pickle=False), everything else to JSON: no pickle anywhere.
state.json carries the SHA-256 of arrays.npz, so a damaged checkpoint is detected; then
`load_latest` falls back to the newest earlier one that reads, with a warning naming both.
`save_checkpoint(..., keep=K)` keeps the newest K checkpoints (0: all).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from essa.io import atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir, read_json
from essa.run.run_files import RunFiles

FORMAT = 1


@dataclass(eq=False)
class BestPoint:
    """The best validated point of a run so far: the distribution mean after `generation` generations
    (0: the warm start), which `essa export` writes."""

    z: np.ndarray  # the point, in the strategy's coordinates (basis.offsets(z) is its adapter)
    generation: int = 0
    validation: float | None = None  # its mean reward on the validation prompts; None: not yet validated
    prompt_rewards: list[float] | None = None  # its reward on each validation prompt (for paired tests)

    def record(self) -> dict:
        """Its JSON form in state.json (the key `scores` holds the per-prompt rewards)."""
        return {"generation": self.generation, "validation": self.validation, "scores": self.prompt_rewards}

    @classmethod
    def from_record(cls, record: dict, z: np.ndarray) -> BestPoint:
        """Read a state.json `best` (older checkpoints have no `scores`, or a null generation)."""
        validation, rewards = record.get("validation"), record.get("scores")
        return cls(
            np.asarray(z, dtype=np.float64),
            int(record.get("generation") or 0),
            None if validation is None else float(validation),
            None if rewards is None else [float(r) for r in rewards],
        )


@dataclass
class Checkpoint:
    generation: int  # generations completed
    strategy: dict  # the strategy's state_dict (arrays and JSON values)
    sampler: dict
    best: BestPoint


def checkpoint_root(run_dir: Path) -> Path:
    return RunFiles(run_dir).checkpoints


def save_checkpoint(run_dir: Path, ckpt: Checkpoint, keep: int = 0) -> Path:
    root = checkpoint_root(run_dir)
    name = f"gen_{ckpt.generation:06d}"
    final, tmp = root / name, root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays: dict[str, Any] = {f"strategy.{k}": v for k, v in ckpt.strategy.items() if isinstance(v, np.ndarray)}
    arrays["best_z"] = ckpt.best.z
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    atomic_write_bytes(tmp / "arrays.npz", data)
    atomic_write_json(
        tmp / "state.json",
        {
            "format": FORMAT,
            "arrays_sha256": hashlib.sha256(data).hexdigest(),
            "generation": ckpt.generation,
            "strategy": {k: v for k, v in ckpt.strategy.items() if not isinstance(v, np.ndarray)},
            "sampler": ckpt.sampler,
            "best": ckpt.best.record(),
        },
    )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    fsync_dir(root)
    atomic_write_text(root / "latest", name + "\n")
    if keep > 0:
        for old in checkpoint_dirs(run_dir)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The run's checkpoint directories, oldest first (temporary ones excluded)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("gen_*") if p.is_dir() and p.name[4:].isdigit())


def load_latest(run_dir: Path) -> Checkpoint | None:
    """The checkpoint `latest` names, or None for a run that never checkpointed. When it is missing
    or damaged, the newest earlier checkpoint that reads, with a warning naming both; an error
    (the first problem's) when none does."""
    root = checkpoint_root(run_dir)
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    named = root / name if name.startswith("gen_") and "/" not in name else None
    try:
        if named is None:
            raise ValueError(f"{pointer} names no checkpoint ({name[:40]!r})")
        return load_checkpoint(named)
    except (OSError, ValueError) as exc:
        problem = exc
    for candidate in reversed(checkpoint_dirs(run_dir)):
        if named is not None and candidate.name >= named.name:
            continue  # the damaged one, or newer than `latest` says the run got (never pointed at)
        try:
            ckpt = load_checkpoint(candidate)
        except (OSError, ValueError):
            continue
        print(
            f"[essa] warning: {problem}; using the previous good checkpoint {candidate} instead",
            file=sys.stderr,
            flush=True,
        )
        return ckpt
    raise ValueError(f"{problem}; no earlier checkpoint in {root} reads either") from problem


def load_checkpoint(directory: Path) -> Checkpoint:
    """One checkpoint directory (`RUN/checkpoints/gen_NNNNNN`), e.g. to export an earlier point of a run."""
    directory = Path(directory)
    state = read_json(directory / "state.json", what="checkpoint state")
    if state.get("format") != FORMAT:
        raise ValueError(f"{directory} has checkpoint format {state.get('format')}, this essa reads {FORMAT}")
    try:
        data = (directory / "arrays.npz").read_bytes()
        expected = state.get("arrays_sha256")  # absent in checkpoints written before it was added
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ValueError("arrays.npz does not match the checksum in state.json")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"checkpoint {directory} is corrupt ({exc})") from exc
    try:
        strategy = dict(state["strategy"])
        strategy.update({k[len("strategy.") :]: v for k, v in arrays.items() if k.startswith("strategy.")})
        best = BestPoint.from_record(state["best"], arrays["best_z"])
        return Checkpoint(state["generation"], strategy, state["sampler"], best)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"checkpoint {directory} is corrupt (missing {exc})") from exc
