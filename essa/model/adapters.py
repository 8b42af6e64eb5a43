"""Warm-start adapters in and out: principal init, reading and writing PEFT LoRA folders.

A PEFT LoRA folder holds `adapter_config.json` and `adapter_model.safetensors` with keys
``base_model.model.<module>.lora_A.weight`` (r × in) and ``...lora_B.weight`` (out × r). That is
the format PEFT's `PeftModel.from_pretrained` and vLLM's `LoRARequest` both load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import cast

import numpy as np

from essa.io import (
    UMASK,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_safetensors,
    pickle_files,
    read_json,
    read_safetensors,
)

PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ESSA_MARKER = "essa.json"  # provenance; its "written_by": "essa" marks a folder essa may replace
ESSA_FILES = {ADAPTER_CONFIG, ADAPTER_WEIGHTS, ESSA_MARKER}  # what every export holds
# Besides, an export may hold files essa wrote with it (the model card README.md, reward.png): their
# SHA-256 is in essa.json ("files"), so that a re-export replaces them only while unedited.

LoRA = dict[str, tuple[np.ndarray, np.ndarray]]  # module -> (A: r × in, B: out × r)


def read_base_weights(
    model_dir: str | Path, target_modules: list[str], only: set[str] | None = None
) -> dict[str, np.ndarray]:
    """The target linear weights of a Hugging Face model folder, as float32 arrays keyed by module
    (`only`: just these modules)."""
    from safetensors import safe_open  # torch-backed: bf16 has no numpy dtype

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in model folder {model_dir}")
    weights = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                parts = key.split(".")
                module = key[: -len(".weight")]
                if (
                    len(parts) >= 2
                    and parts[-1] == "weight"
                    and parts[-2] in target_modules
                    and (only is None or module in only)
                ):
                    weights[module] = f.get_tensor(key).float().numpy()
    if not weights:
        raise ValueError(f"none of the target modules {target_modules} found in {model_dir}")
    return weights


def update_strength(lora: LoRA, scaling: float, model_dir: str | Path, sample: int = 8) -> float:
    """Median of ‖scaling·B·A‖ / ‖W0‖ (Frobenius) over up to `sample` evenly spaced adapted modules.

    The search's steps are relative to the adapter's own singular values, so this is also about
    how far a candidate can move the model: ~1e-2 for principal init, ~3e-3 after a 128-step SFT
    on SmolLM2-135M, ~3e-4 after 3 steps (candidates then all answered alike).
    """
    names = sorted(lora)
    picked = [names[i] for i in np.unique(np.linspace(0, len(names) - 1, min(sample, len(names))).round().astype(int))]
    base = read_base_weights(model_dir, sorted({m.rsplit(".", 1)[-1] for m in picked}), only=set(picked))
    ratios = [
        np.linalg.norm(scaling * (lora[m][1] @ lora[m][0])) / max(cast(float, np.linalg.norm(base[m])), 1e-30)
        for m in picked
        if m in base
    ]
    return float(np.median(ratios)) if ratios else float("nan")


def principal_init(base: dict[str, np.ndarray], rank: int, scale: float) -> LoRA:
    """A LoRA whose factors span the top-`rank` singular directions of each base weight.

    For W = U S Vᵀ: A = diag(√(scale·s)) V_rᵀ and B = U_r diag(√(scale·s)), so that with
    lora_alpha = rank (scaling 1) the adapter starts at B·A = scale · U_r S_r V_rᵀ: a small push
    along the directions the layer already uses most. The search then learns, per direction, how
    much to add or remove. Splitting √ evenly between A and B gives both factors the same
    singular values, so one relative step size fits both.
    """
    lora = {}
    for module, w in base.items():
        U, s, Vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
        root = np.sqrt(scale * s[:rank])
        lora[module] = (root[:, None] * Vt[:rank], U[:, :rank] * root[None, :])
    return lora


def write_peft_adapter(
    out_dir: str | Path,
    lora: LoRA,
    rank: int,
    lora_alpha: float,
    base_model: str,
    provenance: dict | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    """Write a PEFT LoRA folder; the folder appears complete or not at all.

    `out_dir` may be missing, empty, or an earlier essa export (which is replaced atomically);
    any other folder is refused (`ForeignFolderError`), so nothing a user made is deleted.
    Provenance goes to a separate `essa.json` (always written: it marks the folder as essa's), so
    that adapter_config.json holds only keys PEFT and vLLM know. `files` (name -> bytes: a model card,
    a picture) are written beside them, their SHA-256 recorded in essa.json.
    """
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    blocked = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ForeignFolderError(f"cannot write {out_dir}: {blocked} is a file, not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        tensors = {}
        for module, (a, b) in lora.items():
            tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = np.asarray(a, dtype=np.float32)
            tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = np.asarray(b, dtype=np.float32)
        atomic_write_safetensors(tmp / ADAPTER_WEIGHTS, tensors, {"format": "pt"})
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": rank,
            "lora_alpha": lora_alpha,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
            "init_lora_weights": True,
            "modules_to_save": None,
            "target_modules": sorted({m.rsplit(".", 1)[-1] for m in lora}),
        }
        atomic_write_json(tmp / ADAPTER_CONFIG, config)
        recorded = {}
        for name, data in (files or {}).items():
            if Path(name).name != name or name in ESSA_FILES:
                raise ValueError(
                    f"an export's extra file must be a plain name other than {sorted(ESSA_FILES)}: {name!r}"
                )
            atomic_write_bytes(tmp / name, data)
            recorded[name] = hashlib.sha256(data).hexdigest()
        atomic_write_json(
            tmp / ESSA_MARKER, {**(provenance or {}), **({"files": recorded} if recorded else {}), "written_by": "essa"}
        )
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it 0700; an export is for sharing
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


class ForeignFolderError(FileExistsError):
    """The target folder holds files essa did not write; it is left untouched."""


def check_replaceable(out_dir: Path) -> None:
    """Raise unless `out_dir` is absent, an empty folder, or a folder essa wrote (adapter files only)."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_symlink():
        raise ForeignFolderError(
            f"{out_dir} is a symbolic link (to {os.readlink(out_dir)}); essa replaces a folder whole, which would "
            "replace the link: name the folder itself, or another --out"
        )
    if not out_dir.is_dir():
        raise ForeignFolderError(f"{out_dir} exists and is not a folder; choose another --out")
    entries = sorted(p.name for p in out_dir.iterdir())
    if not entries:
        return
    marker = out_dir / ESSA_MARKER
    ours = marker.is_file() and _is_ours(marker)
    written = _written_files(out_dir, marker) if ours else {}
    foreign = [e for e in entries if e not in ESSA_FILES and e not in written]
    edited = [name for name, unchanged in written.items() if not unchanged]
    if foreign or edited or not ours:
        if foreign:
            what = f"holds {', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}"
        elif edited:
            what = f"holds {', '.join(edited)}, changed since essa wrote it"
        else:
            what = "is not an adapter folder written by essa (no essa.json)"
        raise ForeignFolderError(
            f"{out_dir} {what}; essa replaces only an empty folder or an earlier essa export. "
            "Choose a new or empty --out folder, or move those files away."
        )


def replace_dir(new: Path, target: Path) -> None:
    """Put folder `new` at `target`; an existing `target` (already checked) is swapped out, then removed."""
    if not target.exists():
        new.rename(target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    keep_old = False
    try:
        target.rename(old / target.name)  # each step is one rename: either folder is whole at all times
        try:
            new.rename(target)
        except BaseException:
            try:
                (old / target.name).rename(target)  # put the earlier export back
            except OSError:
                keep_old = True  # never delete the only copy of the earlier export
                print(f"[essa] the earlier {target} could not be put back; it is kept in {old}", file=sys.stderr)
            raise
    finally:
        if not keep_old:  # nothing of this attempt stays beside the target
            shutil.rmtree(old, ignore_errors=True)


def _written_files(out_dir: Path, marker: Path) -> dict[str, bool]:
    """The extra files essa.json records that are present, each with whether it is still as written."""
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    present = {}
    for name, digest in recorded.items():
        path = out_dir / str(name)
        if Path(str(name)).name == name and path.is_file():
            present[name] = hashlib.sha256(path.read_bytes()).hexdigest() == digest
    return present


def _is_ours(marker: Path) -> bool:
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("written_by") == "essa"
    except (OSError, ValueError, AttributeError):
        return False


def read_peft_adapter(adapter_dir: str | Path) -> tuple[LoRA, dict]:
    """(module → (A, B), adapter_config) from a PEFT LoRA folder, with errors that say what is wrong."""
    adapter_dir = Path(adapter_dir)
    config = read_json(adapter_dir / ADAPTER_CONFIG, what="LoRA adapter config")
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{adapter_dir} is a {config.get('peft_type')!r} adapter; essa needs a LoRA adapter")
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError(f"{adapter_dir}: rsLoRA/DoRA adapters are not supported; use a plain LoRA")
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        pickled = pickle_files(adapter_dir) if adapter_dir.is_dir() else []
        if pickled:
            raise ValueError(
                f"{adapter_dir} holds its weights as {', '.join(pickled)}, a pickle file, which essa never loads "
                f"(unpickling can run code); convert it to {ADAPTER_WEIGHTS} where you trust it, e.g. "
                "PeftModel.from_pretrained(...).save_pretrained(folder, safe_serialization=True)"
            )
    tensors, _ = read_safetensors(adapter_dir / ADAPTER_WEIGHTS, what="LoRA adapter weights")
    lora: dict[str, list] = {}
    for key, value in tensors.items():
        parts = key[len(PEFT_PREFIX) :].rsplit(".", 2) if key.startswith(PEFT_PREFIX) else []
        if len(parts) != 3 or parts[1] not in ("lora_A", "lora_B") or parts[2] != "weight":
            raise ValueError(f"{adapter_dir}: unexpected tensor {key!r} (only lora_A/lora_B weights are supported)")
        module, factor, _ = parts
        lora.setdefault(module, [None, None])[0 if factor == "lora_A" else 1] = value.astype(np.float64)
    incomplete = [m for m, (a, b) in lora.items() if a is None or b is None]
    if incomplete:
        raise ValueError(f"{adapter_dir}: modules missing lora_A or lora_B: {incomplete[:3]}")
    return {m: (a, b) for m, (a, b) in lora.items()}, config
