"""The configuration reference (docs/configuration.md), generated from the schema and its comments.

Every key comes from the schema (essa.config.Config: valid_keys), its default from the built-in
defaults merged with configs/gsm8k.yaml, and its description from the comment block above the key
in configs/gsm8k.yaml, the file that documents every key. Regenerate with

    python -m essa.config_reference > docs/configuration.md

tests/essa/test_config_reference.py fails when the document and the schema drift apart.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from essa.config import RESUMABLE_KEYS, load_config, packaged_config, valid_keys

HEADER = """# Configuration reference

Generated from the schema (`essa/config.py`) and the comments of `configs/gsm8k.yaml` by
`python -m essa.config_reference`; do not edit by hand. Precedence, lowest first: built-in
defaults, the task's YAML (`configs/<task>.yaml`: only what differs), `--config FILE`, CLI flags,
`key=value` overrides. Defaults below are GSM8K's. **resume** marks the keys `essa align --resume`
may change.
"""


def yaml_comments(path: Path) -> dict[str, str]:
    """Dotted key -> the comment lines right above it in a two-level YAML file (section: key: value)."""
    comments: dict[str, str] = {}
    block: list[str] = []
    section = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):", line)
        if match:
            indent, key = match.groups()
            if not indent:
                section = key
            elif section:
                comments[f"{section}.{key}"] = " ".join(block)
        block = []
    return comments


def reference() -> str:
    cfg = OmegaConf.structured(load_config("gsm8k"))
    path = packaged_config("gsm8k")
    assert path is not None  # configs/gsm8k.yaml ships in the package
    comments = yaml_comments(path)
    out = [HEADER]
    section = None
    for key in valid_keys():
        top = key.split(".")[0]
        if top != section:
            section = top
            out += ["", f"## {section}", "", "| key | default | what |", "|---|---|---|"]
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_list(value) else value
        what = comments.get(key, "").replace("|", "\\|") or "(undocumented)"
        flag = " **resume**" if key in RESUMABLE_KEYS else ""
        out.append(f"| `{key}`{flag} | `{json.dumps(value)}` | {what} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
