"""No pickle is ever loaded from a user's file: planted payloads are refused, and never run.

Each payload, if unpickled, would create a marker file (a stand-in for arbitrary code). Asserted:
the load fails with an error that names the pickle file and the fix, and the marker never appears.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from essa.model.adapters import read_peft_adapter
from essa.model.provision import ModelNotFoundError, resolve_model
from essa.run.checkpoint import load_latest, save_checkpoint


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(marker)))


def adapter_with_bin(folder: Path, marker: Path) -> Path:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 8, "target_modules": ["q_proj"]})
    )
    plant(folder / "adapter_model.bin", marker)
    return folder


def test_a_pickled_adapter_is_refused_naming_the_file(tmp_path):
    marker = tmp_path / "ran"
    folder = adapter_with_bin(tmp_path / "adapter", marker)
    with pytest.raises(ValueError, match="adapter_model.bin.*pickle.*safetensors"):
        read_peft_adapter(folder)
    assert not marker.exists()


def test_a_model_folder_with_only_pickled_weights_is_refused(tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    plant(folder / "pytorch_model.bin", marker)
    with pytest.raises(ModelNotFoundError, match="pytorch_model.bin.*pickle.*safetensors"):
        resolve_model(str(folder))
    assert not marker.exists()


def test_an_object_array_planted_in_a_checkpoint_is_refused(tmp_path):
    from essa.run.checkpoint import BestPoint, Checkpoint
    from essa.run.sampler import PromptSampler
    from essa.search import make_strategy

    marker = tmp_path / "ran"
    es = make_strategy("cma_sep", 4, 4, 0.5, 0)
    directory = save_checkpoint(
        tmp_path,
        Checkpoint(0, es.state_dict(), PromptSampler(5, 2, 0).state_dict(), BestPoint(np.zeros(4))),
    )
    buffer = io.BytesIO()
    np.savez(buffer, best_z=np.array([Payload(marker)], dtype=object))
    (directory / "arrays.npz").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="corrupt"):
        load_latest(tmp_path)
    assert not marker.exists()


def test_essa_align_with_a_pickled_warm_start_exits_2_without_a_traceback(tmp_path):
    marker = tmp_path / "ran"
    folder = adapter_with_bin(tmp_path / "adapter", marker)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "essa.cli",
            "align",
            "--task",
            "gsm8k",
            "--init",
            str(folder),
            "--run-dir",
            str(tmp_path / "run"),
            "--generations",
            "1",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "adapter_model.bin" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
