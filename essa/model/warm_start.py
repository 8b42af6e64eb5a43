"""The warm start: the adapter a search begins from (SFT, principal init, or a user's PEFT folder).

`warm_start(cfg, model_dir)` returns its factors; `report_strength` says how far it moves the
base model, since the search's steps are relative to the adapter's own singular values.
"""

from __future__ import annotations

import sys
from pathlib import Path

from essa.config import Config
from essa.model.adapters import principal_init, read_base_weights, read_peft_adapter

# Below this median ‖ΔW‖/‖W0‖ a warm start barely moves the model, and neither can the search's
# steps (they scale with the adapter): candidates then tend to score alike (see update_strength).
WEAK_WARM_START = 1e-3


def warm_start(cfg: Config, model_dir: Path):
    """(lora, rank, lora_alpha) of the starting adapter named by adapter.init."""
    a = cfg.adapter
    if a.init == "principal":
        base = read_base_weights(model_dir, a.target_modules)
        return principal_init(base, a.rank, a.principal_scale), a.rank, float(a.rank)
    if a.init == "sft":
        from essa.model.sft import sft_adapter

        path = sft_adapter(cfg, model_dir)
    else:
        path = Path(a.init)
    if not path.is_dir():
        raise FileNotFoundError(f"adapter.init={a.init!r} is neither 'sft', 'principal' nor a PEFT adapter folder")
    lora, config = read_peft_adapter(path)
    return lora, int(config["r"]), float(config.get("lora_alpha", config["r"]))


def report_strength(strength: float, init: str) -> None:
    """Print how strongly the warm start changes the base weights (`update_strength`); warn when it barely does."""
    print(f"[essa] warm start: median ||ΔW||/||W0|| = {strength:.1e}", flush=True)
    if strength < WEAK_WARM_START:
        print(
            f"[essa] warning: the warm start ({init}) changes the base weights by only {strength:.1e} of their norm "
            f"(below {WEAK_WARM_START:g}). The search moves singular values relative to the adapter's own, so its "
            "candidates will barely differ and may all score the same. Train the SFT start longer (more "
            "sft.max_examples or sft.epochs), or start from --init principal.",
            file=sys.stderr,
            flush=True,
        )
