"""Everything that touches vLLM: the engine essa's workers drive, and what it loads into vLLM.

- vllm_engine.py: `VLLMEngine` (one vLLM `LLM` scoring candidates in merge or lora mode) and its options.
- scratch.py: the engine's scratch folder in RAM for candidate adapters (claimed, space-checked,
  and cleared of what killed engines left).
- extension.py: the worker extension vLLM mixes into its Worker (merge in place, the shared basis,
  the LoRA kernel choice), driven by `collective_rpc`.
- vllm_patches.py: every change to vLLM's own code, with the version and source it targets.
- lora_grouped.py, lora_shared_basis.py: essa's CPU LoRA kernels (per-adapter grouped matmuls; one
  computation for a whole population that shares an SVD basis).

Importing this package does not import vLLM or torch; the engine does when it is built.
"""

from essa.workers.engine.vllm_engine import Completion, EngineOptions, VLLMEngine, resolve_mode

__all__ = ["Completion", "EngineOptions", "VLLMEngine", "resolve_mode"]
