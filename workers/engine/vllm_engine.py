"""The real inference engine: one vLLM `LLM` that scores candidates in `merge` or `lora` mode.

- `merge`: per candidate, W = W0 + ΔW(x) is written into the engine's weights in place by the
  worker extension (`extension.py`), then that candidate's prompts run in one
  generate call. Small batches (B per call) are its cost on CPU (docs/benchmarks.md).
- `lora`: every candidate becomes a LoRA adapter folder in RAM; all candidates × prompts run in
  ONE generate call, one LoRARequest per prompt. An adapter's name, id and path are never reused:
  vLLM caches adapters (and prefix-cache entries) by name/id/path, not content. On CPU the LoRA
  matmuls are essa's own: every candidate shares the basis' U and V, so each layer runs ONE LoRA
  computation for all of them (`lora_shared_basis.py`), with per-adapter grouped matmuls
  (`lora_grouped.py`) for adapters the basis cannot express; not vLLM's per-token gathers.

The coordinator never imports vLLM: it talks to this engine through the Ray actor. Everything that
touches vLLM lives in this package (workers/engine/): this engine, the worker extension loaded
into vLLM's worker, the patches of vLLM's own code (vllm_patches.py) and the CPU LoRA kernels.
"""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from essa.model.adapters import write_peft_adapter
from essa.model.quantize import is_quantized
from essa.model.svd_lora import SVDLoRA
from essa.workers.engine.scratch import check_scratch_space, claim_scratch
from essa.workers.placement import cpu_kv_cache_gib

if TYPE_CHECKING:
    from vllm.config.model import ModelDType

EXTENSION = "essa.workers.engine.extension.EssaWorkerExtension"


@dataclass
class Completion:
    text: str
    tokens: int
    cached_prompt_tokens: int = 0  # prompt tokens served from vLLM's prefix cache
    # log p(prompt token | the tokens before it), from the second prompt token on, when the
    # sampling asked for it (`prompt_logprobs=0`): a teacher-forced score of the weights
    prompt_logprobs: list[float] | None = None


@dataclass
class EngineOptions:
    model_dir: str
    dtype: str = "bfloat16"
    max_model_len: int = 1024
    mode: str = "lora"  # lora | merge (resolved, never "auto"; see resolve_mode)
    gpu: bool = False
    kv_cache_gib: float = 2.0
    gpu_memory_utilization: float = 0.85
    enforce_eager: bool = False
    max_loras: int = 16
    tensor_parallel_size: int = 1  # GPUs; > 1: vLLM's Ray workers in the actor's placement group (workers/pool.py)
    seed: int = 0
    deterministic: bool = True  # engine core in this process: batches independent of request timing
    # lora mode on CPU: "shared" (one computation for all candidates through the SVD basis,
    # lora_shared_basis.py), "grouped" (per-adapter matmuls, lora_grouped.py) or "vllm" (its torch ops)
    lora_kernel: str = "shared"
    vllm_args: dict = field(default_factory=dict)  # more LLM(...) arguments (benchmarks: max_num_seqs, ...)
    # The pool's name for this engine's slot: an engine removes the scratch folders an earlier engine
    # of the same slot left behind (a killed actor runs no cleanup). "" for engines outside a pool.
    scratch_tag: str = ""


class VLLMEngine:
    """Generates completions for a batch of candidates (search vectors) on the same prompts."""

    def __init__(self, options: EngineOptions, basis: SVDLoRA | None):
        quantized = is_quantized(options.model_dir)
        if quantized and options.mode == "merge" and basis is not None:
            raise ValueError(
                f"{options.model_dir} holds quantized weights, which cannot take a merged update: use mode lora"
            )
        parallel: dict[str, Any] = {}
        if options.tensor_parallel_size > 1:
            if options.mode == "merge" and basis is not None:
                raise ValueError("merge mode cannot write into tensor-parallel shards: use mode lora")
            # The actor holds no GPU itself (num_gpus=0, so Ray hid them all); vLLM's Ray workers take
            # the GPUs of the placement group the actor runs in (vLLM finds it and passes it on).
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            parallel = dict(tensor_parallel_size=options.tensor_parallel_size, distributed_executor_backend="ray")
        if not options.gpu:
            # vLLM on CPU reserves KV cache from RAM; its default fraction fails on small machines.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gib(options.kv_cache_gib)))
        lora = options.mode == "lora" and basis is not None
        # In-process, the engine core steps only once generate() has queued every request; in its own
        # process it starts on the first arrival, so a loaded machine batches (and rounds) differently.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if options.deterministic else "1"
        from vllm import LLM, envs

        envs.disable_envs_cache()  # an earlier engine in this process froze vLLM's view of the environment

        self.options = options
        self.basis = basis
        self._scratch = claim_scratch(options.scratch_tag)
        # a generation's candidate adapters in scratch: float32 A (r × in) and B (out × r) per module
        self._adapter_bytes = (
            0
            if basis is None
            else 4 * basis.rank * sum(fa.Vt.shape[1] + fb.U.shape[0] for fa, fb in zip(basis.a, basis.b))
        )
        self._ids = itertools.count(1)
        self._run = uuid.uuid4().hex[:8]
        # Only the layers essa adapts get LoRA wrappers: vLLM otherwise wraps every supported
        # layer (MLP, lm_head) and runs zero-weight LoRA math on them at every step.
        lora_targets: dict[str, Any] = (
            {"lora_target_modules": sorted({m.rsplit(".", 1)[-1] for m in basis.modules})}
            if lora and basis is not None
            else {}
        )
        self.llm: LLM | None = LLM(
            options.model_dir,
            dtype=cast("ModelDType", options.dtype),  # a dtype name vLLM takes (essa.model.dtypes.engine_dtype)
            max_model_len=options.max_model_len,
            seed=options.seed,
            enforce_eager=options.enforce_eager,
            gpu_memory_utilization=options.gpu_memory_utilization if options.gpu else 0.9,
            worker_extension_cls=EXTENSION,  # one class for every base: see extension.py
            enable_lora=lora,
            max_loras=options.max_loras if lora else 1,
            max_lora_rank=_lora_rank_slot(basis.rank) if lora and basis is not None else 16,
            **lora_targets,
            enable_prefix_caching=True,
            **parallel,
            **options.vllm_args,
        )
        if not options.gpu:
            # Where the model lives (this process, or vLLM's engine core), maybe after another engine's
            # choice: essa's CPU LoRA ops for lora mode, vLLM's own otherwise (vllm_patches.py).
            self.llm.collective_rpc("essa_use_lora_kernel", args=(options.lora_kernel if lora else "vllm",))
        if options.mode == "merge" and basis is not None:
            self.llm.collective_rpc("essa_load_basis", args=(self._basis_file(), options.model_dir))
        self.shared_basis_layers = 0  # vLLM layers whose LoRA runs through the shared basis
        if lora and not options.gpu and options.lora_kernel == "shared":
            self.shared_basis_layers = sum(
                self.llm.collective_rpc("essa_register_lora_basis", args=(self._basis_file(),))
            )

    def _basis_file(self) -> str:
        path = self._scratch / "basis.safetensors"
        assert self.basis is not None  # called only when the engine has a basis (merge or lora mode)
        self.basis.save(path)
        return str(path)

    def tokenizer(self):
        return self.llm.get_tokenizer()

    def generate(
        self, prompts: list[str], sampling: dict, vectors: np.ndarray | None
    ) -> tuple[list[list[Completion]], dict[str, float]]:
        """Completions per candidate (rows of `vectors`; None means the plain base model)."""
        from vllm import SamplingParams

        assert self.llm is not None, "the engine is closed"
        params = SamplingParams(**sampling)
        timings = {"apply": 0.0, "generate": 0.0}
        if vectors is None or self.basis is None:
            if self.options.mode == "merge" and self.basis is not None:
                self._timed(timings, "apply", self._merge, None)
            outputs = self._timed(timings, "generate", self.llm.generate, prompts, params, use_tqdm=False)
            return [_completions(outputs)], timings
        if self.options.mode == "merge":
            results = []
            for x in vectors:
                self._timed(timings, "apply", self._merge, x)
                outputs = self._timed(timings, "generate", self.llm.generate, prompts, params, use_tqdm=False)
                results.append(_completions(outputs))
            return results, timings
        return self._generate_lora(prompts, params, vectors, timings)

    def _merge(self, x: np.ndarray | None) -> None:
        assert self.llm is not None, "the engine is closed"
        self.llm.collective_rpc("essa_apply", args=(None if x is None else x.tolist(),))
        # The prefix cache keys on tokens, not weights: KV blocks computed under the previous
        # candidate's weights must not serve this one.
        self.llm.reset_prefix_cache()

    def _generate_lora(self, prompts, params, vectors, timings):
        from vllm.lora.request import LoRARequest

        start = time.perf_counter()
        check_scratch_space(self._scratch, len(vectors), self._adapter_bytes)
        requests, folders = [], []
        try:
            for x in vectors:
                lora_id = next(self._ids)
                name = f"essa-{self._run}-{lora_id}"
                folders.append(self._scratch / name)
                write_peft_adapter(
                    folders[-1], self.basis.factors(x), self.basis.rank, self.basis.lora_alpha, self.options.model_dir
                )
                requests.append(LoRARequest(name, lora_id, str(folders[-1])))
            timings["apply"] += time.perf_counter() - start
            all_prompts = [p for _ in vectors for p in prompts]
            all_requests = [r for r in requests for _ in prompts]
            outputs = self._timed(
                timings, "generate", self.llm.generate, all_prompts, params, lora_request=all_requests, use_tqdm=False
            )
        finally:  # the candidates' adapters leave RAM (/dev/shm) even when generation fails
            for request in requests:
                try:
                    self.llm.llm_engine.remove_lora(request.lora_int_id)
                except Exception:  # noqa: BLE001 - an adapter vLLM never loaded, or an engine already broken
                    pass
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        flat = _completions(outputs)
        n = len(prompts)
        return [flat[i * n : (i + 1) * n] for i in range(len(vectors))], timings

    @staticmethod
    def _timed(timings: dict, key: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[key] += time.perf_counter() - start

    def close(self) -> None:
        """Stop the engine's processes now rather than at interpreter exit, and drop scratch files."""
        if self.llm is None:
            return  # closed already
        try:
            self.llm.llm_engine.engine_core.shutdown()
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)
            if self.options.deterministic:
                # In-process, the engine's memory goes with its objects; vLLM freezes the GC heap at
                # each engine start, so collect this one's cycles before a later engine freezes them.
                self.llm = None
                gc.collect()


def _completions(outputs) -> list[Completion]:
    return [
        Completion(o.outputs[0].text, len(o.outputs[0].token_ids), o.num_cached_tokens or 0, _prompt_logprobs(o))
        for o in outputs
    ]


def _prompt_logprobs(output) -> list[float] | None:
    if output.prompt_logprobs is None:
        return None
    pairs = zip(output.prompt_token_ids[1:], output.prompt_logprobs[1:])  # the first token has none
    return [float(ranked[token].logprob) for token, ranked in pairs]


def _lora_rank_slot(rank: int) -> int:
    """vLLM accepts only some max_lora_rank values; take the smallest that fits."""
    for slot in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= slot:
            return slot
    raise ValueError(f"LoRA rank {rank} is larger than vLLM supports (512)")


def resolve_mode(mode: str) -> str:
    """`auto` is lora on every device. On CPU lora measured faster than merge (docs/benchmarks.md,
    "Idle machine, both cores, fused LoRA op"): merge decodes B sequences per call, lora all λ·B in
    one. On GPU merge is unmeasured. (A quantized base cannot take a merged update: the config
    refuses merge for one, and so does the engine.)
    """
    return "lora" if mode == "auto" else mode
