"""Every file and folder of a run folder, named once; what writes and reads each is noted beside it.

Modules take the run folder and ask `RunFiles(run_dir)` for a path instead of spelling its name.
This module imports nothing of essa's, so any module may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFiles:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """The resolved configuration, written last at creation: its presence marks a run (essa.run.run_dir)."""
        return self.root / "config.yaml"

    @property
    def warm_start(self) -> Path:
        """The starting adapter, a PEFT LoRA folder (essa.run.run_dir)."""
        return self.root / "warm_start"

    @property
    def basis(self) -> Path:
        """The frozen SVD basis of the warm start (essa.model.svd_lora)."""
        return self.root / "basis.safetensors"

    @property
    def command(self) -> Path:
        """The command line that started the run (essa.run.run_dir; the model card quotes it)."""
        return self.root / "command.txt"

    @property
    def inputs(self) -> Path:
        """Fingerprints of the data, reward and model a resume checks (essa.run.inputs)."""
        return self.root / "inputs.json"

    @property
    def calibration(self) -> Path:
        """The measured initial step size, when search.sigma is null (essa.run.coordinator)."""
        return self.root / "calibration.json"

    @property
    def metrics(self) -> Path:
        """One JSON line per generation (essa.run.run_dir)."""
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        """gen_NNNNNN/ folders and the `latest` pointer (essa.run.checkpoint)."""
        return self.root / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        """The metrics as TensorBoard scalars (essa.run.run_log)."""
        return self.root / "tensorboard"

    @property
    def heldout(self) -> Path:
        """Warm start against the exported point on held-out prompts (essa.report.heldout)."""
        return self.root / "heldout.json"

    @property
    def forgetting(self) -> Path:
        """The same comparison on another task's test prompts (essa.report.forgetting)."""
        return self.root / "forgetting.json"

    @property
    def plot(self) -> Path:
        """The reward curve, drawn at the end (essa.report.plots); an export carries a copy."""
        return self.root / "reward.png"

    @property
    def adapter(self) -> Path:
        """The exported best point with its model card (essa.report.export)."""
        return self.root / "adapter"

    @property
    def lock(self) -> Path:
        """The OS lock of the process that holds the run (essa.run.run_dir)."""
        return self.root / ".lock"
