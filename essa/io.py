"""Atomic file writes and safe reads: nothing half-written is ever visible under its final name.

Every file essa writes goes to a temporary name in the same directory, is flushed and fsynced,
then renamed over the target (rename is atomic on POSIX). Readers turn a corrupt or missing
file into an error that names the file and what to do. A cache folder (a converted model, a
quantized base) is built once across processes under a file lock (`build_once`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

UMASK = os.umask(0)
os.umask(UMASK)  # read once at import (os.umask can only be read by setting it)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or new entry in `directory` survive a power loss (the entry lives in the directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a platform or filesystem without directory handles: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; nothing more can be done
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)


def atomic_write_safetensors(
    path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> None:
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path} is corrupt ({exc}); restore it or delete it") from exc


def parse_safetensors(data: bytes, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of safetensors bytes as numpy arrays, plus the string metadata."""
    try:
        tensors = load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is corrupt ({exc}); restore it or delete it") from exc
    return tensors, header.get("__metadata__", {}) or {}


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return parse_safetensors(path.read_bytes(), what=f"{what} {path}")


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # torch.save / pickle formats: never loaded


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks (model weights can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def pickle_files(folder: Path) -> list[str]:
    """Names of the files in `folder` stored in a pickle format (unpickling one can run code)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.suffix in PICKLE_SUFFIXES)


def ram_root() -> Path:
    """Where scratch files live: RAM (/dev/shm) when available, else the temp dir."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return Path("/dev/shm")
    return Path(tempfile.gettempdir())


def ram_dir(prefix: str) -> Path:
    """A fresh private directory under ram_root()."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=ram_root()))


def build_once(target: Path, build, marker: str = "config.json") -> bool:
    """Make the cache folder `target` once across processes: under a file lock, `build(tmp)` fills a
    temporary sibling that is then renamed into place (and removed if `build` fails), so `target`
    is either absent or complete. False when `target` (with its `marker` file) already existed or
    another process made it while this one waited for the lock."""
    if (target / marker).is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / marker).is_file():
            return False
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(target)
    return True


@contextmanager
def file_lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
