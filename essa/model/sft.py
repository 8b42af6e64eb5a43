"""The supervised warm start: `essa sft` and `adapter.init=sft`.

A LoRA adapter is trained with PEFT on (chat prompt, response) pairs of the task:

- tasks with reference solutions (GSM8K, MATH-500, Countdown) use them: GSM8K's end in
  '#### <number>', the format its reward reads first;
- tasks without (IFEval, your own `--data`) get pairs by rejection sampling: the base model
  draws `sft.samples_per_prompt` responses per ES-train prompt at `sft.sample_temperature`, and
  a draw is kept when the task's reward gives it at least `sft.min_reward`.

The loss covers the response tokens only. The adapter is cached under
`$ESSA_CACHE_DIR/sft/` keyed by everything that shapes it (model, task, prompts and data,
rank and target modules, the sft settings), so `essa align` trains it once and then reuses it.
Training runs in this process (CUDA when torch sees a GPU, else CPU); sampling uses the
rollout pool, which is shut down before training starts.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from essa.config import Config
from essa.io import file_lock, read_json
from essa.model.adapters import ADAPTER_CONFIG, PEFT_PREFIX, write_peft_adapter
from essa.model.dtypes import engine_dtype
from essa.model.provision import cache_dir
from essa.rewards.task import Task, load_task

Pair = tuple[list[dict], str]  # (chat messages up to the user turn, the assistant response)
SAMPLE_CHUNK = 64  # prompts per sampling call: a progress update without hurting the batch


class SFTError(ValueError):
    """SFT cannot run as configured; the message says why and what to change."""


def sft_adapter(cfg: Config, model_dir: Path, cache_root: Path | None = None) -> Path:
    """The cached SFT adapter folder for `cfg`, trained first when missing (cache_root: tests)."""
    task = load_task(cfg.task)
    key = cache_key(cfg, task, model_dir)
    root = cache_root or cache_dir() / "sft"
    target = root / f"{cfg.task.name}-{_slug(cfg.model.name)}-r{cfg.adapter.rank}-{key[:12]}"
    if (target / ADAPTER_CONFIG).is_file():
        print(f"[essa] SFT warm start: cached {target}", flush=True)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / ADAPTER_CONFIG).is_file():  # another process trained it while we waited
            return target
        pairs, source = sft_pairs(cfg, task)
        print(
            f"[essa] SFT warm start: training on {len(pairs)} {source} pairs (cached afterwards in {target})",
            flush=True,
        )
        lora, stats = train_lora(model_dir, pairs, cfg)
        alpha = cfg.sft.lora_alpha or 2.0 * cfg.adapter.rank
        provenance = {
            "kind": "sft",
            "task": cfg.task.name,
            "model": cfg.model.name,
            "source": source,
            "cache_key": key,
            "sft": asdict(cfg.sft),
            **stats,
        }
        write_peft_adapter(target, lora, cfg.adapter.rank, alpha, cfg.model.name, provenance)
    print(
        f"[essa] SFT done in {stats['train_seconds']:.0f}s: loss {stats['loss_first']:.3f} → "
        f"{stats['loss_last']:.3f}; adapter {target}",
        flush=True,
    )
    return target


def training_dtype(cfg: Config) -> str:
    """The dtype the SFT trains the base in (model.dtype, `auto` resolved as for the engines)."""
    import torch

    return engine_dtype(cfg.model.dtype, torch.cuda.is_available())[0]


def cache_key(cfg: Config, task: Task, model_dir: Path) -> str:
    """SHA-256 of everything that shapes the adapter; any change trains a new one."""
    source = task.examples(task.sft_split)
    rows = hashlib.sha256(json.dumps(source, sort_keys=True, default=str).encode()).hexdigest()
    config = model_dir / "config.json"
    parts = {
        "model": cfg.model.name,
        "model_config": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "dtype": training_dtype(cfg),
        "task": cfg.task.name,
        "system_prompt": cfg.task.system_prompt,
        "reward": cfg.task.reward if task.reference_response is None else None,
        "data": rows,
        "rank": cfg.adapter.rank,
        "target_modules": sorted(cfg.adapter.target_modules),
        "sft": asdict(cfg.sft),
        "max_new_tokens": cfg.generation.max_new_tokens if task.reference_response is None else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def sft_pairs(cfg: Config, task: Task) -> tuple[list[Pair], str]:
    """(pairs, "reference" | "rejection-sampled"): the task's references, else sampled and filtered."""
    if task.reference_response is not None:
        examples = task.examples(task.sft_split)[: cfg.sft.max_examples]
        return [(task.build_messages(e), task.reference_response(e)) for e in examples], "reference"
    return rejection_sample(cfg, task), "rejection-sampled"


def rejection_sample(cfg: Config, task: Task) -> list[Pair]:
    """Responses of the base model that earn at least sft.min_reward, deduplicated per prompt."""
    from essa.run.rollout_pool import pool_from_config

    s = cfg.sft
    examples = task.examples(task.sft_split)
    wanted = s.max_examples or len(examples) * s.samples_per_prompt
    step = min(SAMPLE_CHUNK, wanted)  # a small request samples a small first chunk
    sampling = dict(temperature=s.sample_temperature, max_tokens=cfg.generation.max_new_tokens, seed=None)
    pairs: list[Pair] = []
    drawn = 0
    pool = pool_from_config(cfg, None, sampling=sampling)
    try:
        bar = tqdm(total=len(examples), desc="essa sft: sampling", unit="prompt", dynamic_ncols=True)
        for start in range(0, len(examples), step):
            if len(pairs) >= wanted:
                break
            chunk = list(range(start, min(start + step, len(examples))))
            indices = [i for i in chunk for _ in range(s.samples_per_prompt)]
            result = pool.evaluate(None, task.sft_split, indices, texts=True)
            drawn += len(indices)
            kept = keep_rewarded(indices, result.texts[0], result.rewards[0], s.min_reward)
            pairs += [(task.build_messages(examples[i]), text) for i, text in kept]
            bar.update(len(chunk))
            bar.set_postfix(kept=len(pairs))
        bar.close()
    finally:
        pool.shutdown()
    if not pairs:
        raise SFTError(
            f"rejection sampling kept none of {drawn} responses (reward >= sft.min_reward={s.min_reward}); "
            "lower sft.min_reward, raise sft.samples_per_prompt, or start from adapter.init=principal"
        )
    print(f"[essa] rejection sampling kept {len(pairs)} of {drawn} responses", flush=True)
    return pairs[: s.max_examples]


def keep_rewarded(indices: list[int], texts: list[str], rewards, min_reward: float) -> list[tuple[int, str]]:
    """(prompt index, text) of the draws with reward >= min_reward, each distinct text once per prompt."""
    kept, seen = [], set()
    for i, text, reward in zip(indices, texts, rewards):
        if reward >= min_reward and text.strip() and (i, text) not in seen:
            seen.add((i, text))
            kept.append((i, text))
    return kept


def tokenize_pairs(tokenizer, pairs: list[Pair], max_length: int) -> tuple[list[tuple[list[int], int]], int]:
    """(token ids, prompt length) per pair, and how many were skipped for exceeding max_length.

    The prompt is tokenized exactly as the engines see it (chat template with the generation
    prompt); the response part is the rest of the templated conversation, end-of-turn included.
    """
    encoded, skipped = [], 0
    for messages, response in pairs:
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(prompt):
            raise SFTError(
                "the model's chat template does not extend the prompt with the response; "
                "SFT needs a template where the assistant turn follows the generation prompt"
            )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        ids = prompt_ids + response_ids
        if len(ids) > max_length:
            skipped += 1
            continue
        encoded.append((ids, len(prompt_ids)))
    return encoded, skipped


def batches(encoded: list[tuple[list[int], int]], batch_size: int, epochs: int, seed: int) -> list[list[int]]:
    """Indices per optimizer step: shuffled each epoch, then grouped by length within windows of
    16 batches so that padding stays small without a fixed length order."""
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(epochs):
        order = rng.permutation(len(encoded)).tolist()
        window = 16 * batch_size
        for start in range(0, len(order), window):
            part = sorted(order[start : start + window], key=lambda i: len(encoded[i][0]))
            group = [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
            steps += [group[k] for k in rng.permutation(len(group))]
    return steps


def train_lora(model_dir: Path, pairs: list[Pair], cfg: Config) -> tuple[dict, dict]:
    """Train a LoRA on `pairs`; returns (module → (A, B) float32 arrays, statistics)."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    s, a = cfg.sft, cfg.adapter
    started = time.perf_counter()
    torch.manual_seed(s.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoded, skipped = tokenize_pairs(tokenizer, pairs, s.max_length)
    if not encoded:
        raise SFTError(f"all {len(pairs)} SFT pairs are longer than sft.max_length={s.max_length} tokens; raise it")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, training_dtype(cfg))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device)  # type: ignore[arg-type]  # transformers wraps Module.to with functools.wraps, which mypy reads as unbound
    lora_config = LoraConfig(
        r=a.rank,
        lora_alpha=s.lora_alpha or 2.0 * a.rank,  # type: ignore[arg-type]  # PEFT annotates an int; it scales by alpha / r, a float works
        lora_dropout=0.0,
        target_modules=list(a.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_config)  # adapter weights in float32 (PEFT's autocast default)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=0.0)
    steps = batches(encoded, s.batch_size, s.epochs, s.seed)
    warmup = max(1, math.ceil(0.05 * len(steps)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: min((k + 1) / warmup, max(0.0, (len(steps) - k) / max(1, len(steps) - warmup)))
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    losses = []
    model.train()
    bar = tqdm(steps, desc="essa sft: training", unit="step", dynamic_ncols=True)
    for step in bar:
        input_ids, labels, mask = collate([encoded[i] for i in step], pad)
        out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    bar.close()
    lora = lora_from_state(get_peft_model_state_dict(model))
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()  # the engines that start next may share this GPU
    head = max(1, min(10, len(losses) // 4))
    stats = {
        "pairs": len(pairs),
        "pairs_used": len(encoded),
        "skipped_too_long": skipped,
        "steps": len(steps),
        "loss_first": float(np.mean(losses[:head])),
        "loss_last": float(np.mean(losses[-head:])),
        "losses": [round(x, 4) for x in losses],
        "train_seconds": round(time.perf_counter() - started, 1),
        "device": device,
    }
    return lora, stats


def collate(rows: list[tuple[list[int], int]], pad: int):
    """Right-padded (input_ids, labels, attention_mask); labels are -100 on the prompt and padding."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, (ids, prompt_len) in enumerate(rows):
        input_ids[k, : len(ids)] = torch.tensor(ids)
        labels[k, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        mask[k, : len(ids)] = 1
    return input_ids, labels, mask


def lora_from_state(state: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """module → (A, B) from PEFT's adapter state dict (keys base_model.model.<module>.lora_A.weight)."""
    lora: dict[str, list] = {}
    for key, tensor in state.items():
        module, factor, _ = key[len(PEFT_PREFIX) :].rsplit(".", 2)
        lora.setdefault(module, [None, None])[0 if factor == "lora_A" else 1] = tensor.float().cpu().numpy()
    return {m: (a, b) for m, (a, b) in lora.items()}


def describe(adapter_dir: Path) -> dict:
    """What an SFT adapter's essa.json records (pairs, steps, loss, time)."""
    return read_json(adapter_dir / "essa.json", what="SFT provenance")


def copy_adapter(adapter_dir: Path, out: Path) -> Path:
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another --out or remove it")
    shutil.copytree(adapter_dir, out)
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name)[:40] or "model"
