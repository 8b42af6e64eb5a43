"""Export never deletes what it did not write: a foreign folder is refused and left as it was, an
earlier export is replaced whole, and the run directory is never the target."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from essa.cli import main
from essa.config import load_config, to_yaml
from essa.model.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ForeignFolderError,
    read_peft_adapter,
    write_peft_adapter,
)
from essa.model.svd_lora import SVDLoRA

MODULE = "model.layers.0.self_attn.q_proj"


def lora(seed=0, rank=2):
    rng = np.random.default_rng(seed)
    return {MODULE: (rng.standard_normal((rank, 6)), rng.standard_normal((5, rank)))}


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as essa lays it out (config + basis, no checkpoint), without a model."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config("gsm8k", None, {}, [])
    (run / "config.yaml").write_text(to_yaml(cfg))
    SVDLoRA.from_lora(lora(), 2, 4.0).save(run / "basis.safetensors")
    (run / "metrics.jsonl").write_text('{"generation": 0}\n')
    return run


def test_a_folder_with_user_files_is_refused_and_left_untouched(tmp_path):
    target = tmp_path / "models"
    (target / "sub").mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    (target / "sub" / "weights.bin").write_bytes(b"\0" * 10)
    before = snapshot(target)
    with pytest.raises(ForeignFolderError, match="notes.txt"):
        write_peft_adapter(target, lora(), 2, 4.0, "base")
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]  # no temp folder left behind


def test_someone_elses_peft_adapter_is_not_replaced(tmp_path):
    """A PEFT folder with the same file names but without essa's marker is the user's work."""
    theirs = tmp_path / "adapter"
    write_peft_adapter(theirs, lora(seed=1), 2, 4.0, "base")
    (theirs / "essa.json").unlink()
    before = snapshot(theirs)
    with pytest.raises(ForeignFolderError, match="not an adapter folder written by essa"):
        write_peft_adapter(theirs, lora(seed=2), 2, 4.0, "base")
    assert snapshot(theirs) == before


def test_an_earlier_export_is_replaced_whole(tmp_path):
    target = tmp_path / "adapter"
    write_peft_adapter(target, lora(seed=1), 2, 4.0, "base", provenance={"v": 1})
    write_peft_adapter(target, lora(seed=2, rank=1), 1, 1.0, "base2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    back, config = read_peft_adapter(target)
    assert config["r"] == 1 and config["base_model_name_or_path"] == "base2"
    np.testing.assert_allclose(back[MODULE][0], lora(seed=2, rank=1)[MODULE][0], rtol=1e-6)


def test_an_empty_folder_is_used(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    write_peft_adapter(target, lora(), 2, 4.0, "base")
    assert (target / ADAPTER_WEIGHTS).is_file()


@pytest.mark.parametrize("make", ["file", "parent_file"])
def test_a_file_in_the_way_is_named(tmp_path, make):
    blocker = tmp_path / "thing"
    blocker.write_text("x")
    target = blocker if make == "file" else blocker / "adapter"
    with pytest.raises(ForeignFolderError, match="thing"):
        write_peft_adapter(target, lora(), 2, 4.0, "base")
    assert blocker.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


def test_exported_files_get_the_usual_modes(tmp_path):
    target = write_peft_adapter(tmp_path / "adapter", lora(), 2, 4.0, "base")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~mask
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("where", ["run", "inside", "parent"])
def test_export_never_targets_the_run_directory(run_dir, where, capsys):
    out = {"run": run_dir, "inside": run_dir / "checkpoints", "parent": run_dir.parent}[where]
    before = snapshot(run_dir.parent)
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("essa: error:") and "outside it" in err
    assert snapshot(run_dir.parent) == before


def test_export_into_a_foreign_folder_exits_2_and_keeps_it(run_dir, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), "--out", str(models)]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert sorted(p.name for p in models.iterdir()) == ["notes.txt"]


def test_export_without_checkpoint_writes_the_warm_start_and_says_so(run_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert "warm start" in capsys.readouterr().out
    back, _ = read_peft_adapter(out)
    np.testing.assert_allclose(back[MODULE][0], lora()[MODULE][0], rtol=1e-5, atol=1e-6)
    # exporting again replaces the earlier export
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
