"""Reading task data: local JSONL files with line-numbered errors, or the Hugging Face Hub.

A local copy is used when a data directory is configured (`task.data_dir` or $ESSA_DATA_DIR);
otherwise the hub id, through `datasets`. Local files are read with the standard library rather
than `datasets.load_dataset("json")`, so that a malformed row is reported with its file and line
number, and nothing is written to the datasets cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


class DataError(ValueError):
    """Task data is missing or malformed; the message names the file, the line and the fix."""


def data_dir(configured: str | None) -> Path | None:
    value = configured or os.environ.get("ESSA_DATA_DIR")
    return Path(value).expanduser() if value else None


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a JSONL file; each must be an object with the `required` keys."""
    if path.is_dir():
        raise DataError(f"{path} is a folder; name the JSONL file in it (one JSON object per line)")
    if not path.is_file():
        raise DataError(f"data file not found: {path} (set task.data_dir or $ESSA_DATA_DIR to the folder holding it)")
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM (Windows editors) is fine
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                    "JSONL is UTF-8: convert the file, e.g. iconv -f latin1 -t utf-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(f"{path}:{number}: missing key(s) {missing}; each row needs {list(required)}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows


def load_hub_split(hub_id: str, config: str | None, split: str) -> list[dict]:
    try:
        import datasets

        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as exc:  # offline or unknown: the user's fix is the same
        raise DataError(
            f"could not load {hub_id} ({split}) from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "Offline? Point task.data_dir or $ESSA_DATA_DIR at a local copy."
        ) from exc


def stable_order(rows: list[dict], key: str) -> list[dict]:
    """Rows sorted by the SHA-256 of a text field: a fixed shuffle that ignores file order."""
    return sorted(rows, key=lambda row: hashlib.sha256(str(row[key]).encode("utf-8")).hexdigest())


def take_splits(ordered: list[dict], sizes: list[tuple[str, int | None]]) -> dict[str, list[dict]]:
    """Consecutive slices of `ordered`, in the order given; a size of None takes the rest."""
    splits, start = {}, 0
    for name, size in sizes:
        end = len(ordered) if size is None else start + size
        splits[name], start = ordered[start:end], end
    return splits


def chat_messages(system_prompt: str | None, user: object) -> list[dict]:
    """A one-turn chat: the system prompt (when non-empty), then the user's text."""
    chat = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return chat + [{"role": "user", "content": str(user)}]
