"""`essa export RUN --out DIR --merge`: the best point merged into the base model, a full model folder.

Every adapted weight becomes W + (lora_alpha / r) · B · A, computed in float32 and stored in the
base weight's own dtype (bf16 for the embedded model); every other tensor is copied unchanged,
shard by shard, under the same names, so the folder loads wherever the base model does
(transformers' `AutoModelForCausalLM.from_pretrained(DIR)`, vLLM's `LLM(model=DIR)`). The base's
config, tokenizer, chat template and generation config are copied beside it; weights stored as
pickles (.bin, .pt) are never read (essa.io.pickle_files). The folder is written under a
temporary name and renamed into place; an existing folder is never replaced (choose a new one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from essa.io import UMASK, fsync_dir, pickle_files

LoRA = dict  # module -> (A (r, in), B (out, r)) float32 arrays

# Files of a model folder that describe it rather than hold weights; copied as they are.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "model.safetensors.index.json",
)


def check_merge_target(out_dir: Path) -> None:
    """A merge writes a new folder: refuse one that exists with anything in it."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"--merge writes a new model folder, and {out_dir} already exists and is not empty; "
            "choose a new or empty --out (nothing there was changed)"
        )


def write_merged_model(
    out_dir: Path, model_dir: Path, lora: LoRA, scaling: float, files: dict[str, bytes] | None = None
) -> Path:
    """Merge `lora` (scaled by `scaling`) into the model folder `model_dir`, written as `out_dir`;
    `files` (name -> bytes: the model card, a picture) go beside the weights."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    out_dir, model_dir = Path(out_dir), Path(model_dir)
    check_merge_target(out_dir)
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        found = pickle_files(model_dir)
        raise FileNotFoundError(
            f"no *.safetensors weights in model folder {model_dir}"
            + (f" (only {', '.join(found)}, a pickle format essa does not load)" if found else "")
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        remaining = set(lora)
        for shard in shards:
            tensors = {}
            with safe_open(str(shard), framework="pt") as f:
                metadata = f.metadata() or {"format": "pt"}
                for key in f.keys():
                    tensor = f.get_tensor(key)
                    module = key[: -len(".weight")] if key.endswith(".weight") else None
                    if module in lora:
                        a, b = (torch.from_numpy(x).float() for x in lora[module])
                        if tensor.shape != (b.shape[0], a.shape[1]):
                            raise ValueError(
                                f"the adapter's {module} is {b.shape[0]}x{a.shape[1]} but the base "
                                f"weight is {tuple(tensor.shape)}: it was made for another model"
                            )
                        tensor = (tensor.float() + scaling * (b @ a)).to(tensor.dtype)
                        remaining.discard(module)
                    tensors[key] = tensor.contiguous()
            save_file(tensors, str(tmp / shard.name), metadata=metadata)
        if remaining:
            raise ValueError(
                f"the base model {model_dir} has no weights for the adapter's modules "
                f"{sorted(remaining)[:3]}: the adapter was made for another model"
            )
        for name in MODEL_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp / name)
        for name, data in (files or {}).items():
            (tmp / name).write_bytes(data)
        for path in tmp.iterdir():
            os.chmod(path, 0o666 & ~UMASK)
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o777 & ~UMASK)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked): the rename needs the name free
        tmp.rename(out_dir)
        fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
