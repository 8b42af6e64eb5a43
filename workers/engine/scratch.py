"""The engine's scratch space in RAM (essa.io.ram_root): one folder per engine for the candidate
adapters of a generation, marked with its maker's host and pid so that what a killed engine or a
killed run left behind is found and removed, and a space check before a generation writes."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from essa.io import ram_dir, ram_root

SCRATCH_PREFIX = "essa-engine-"
SCRATCH_MARGIN = 64 * 2**20  # bytes left free besides the adapters (PEFT writes its config beside them)


class ScratchSpaceError(ValueError):
    """The engine's scratch folder (RAM) cannot hold a generation's candidate adapters. Every engine
    on this machine would fail alike, so the pool stops the run at once instead of retrying."""


SCRATCH_OWNER = "owner.json"  # in each scratch folder: the host and pid of the process that made it


def claim_scratch(tag: str) -> Path:
    """A fresh scratch folder in RAM (essa.io.ram_root), marked with its maker's host and pid.

    First removes what earlier engines left behind: with a tag, the folders of this pool slot (a
    killed predecessor); always, the folders whose maker on this host has exited (a run killed as a
    whole, SIGKILL or a lost node, whose pool never shut down). A live engine's folder, another
    host's (a shared /dev/shm) or an unmarked one is never touched.
    """
    prefix = f"{SCRATCH_PREFIX}{tag}-" if tag else SCRATCH_PREFIX
    for folder in ram_root().glob(SCRATCH_PREFIX + "*"):
        if (tag and folder.name.startswith(prefix)) or _maker_has_exited(folder):
            shutil.rmtree(folder, ignore_errors=True)
    folder = ram_dir(prefix)
    (folder / SCRATCH_OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    return folder


def _maker_has_exited(folder: Path) -> bool:
    try:
        owner = json.loads((folder / SCRATCH_OWNER).read_text())
        host, pid = owner["host"], int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # unmarked (an older essa's, or being made right now): left alone
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return False


def remove_scratch(owner_tag: str) -> None:
    """Remove every scratch folder whose tag starts with `owner_tag` (a pool's, at its shutdown)."""
    for folder in ram_root().glob(f"{SCRATCH_PREFIX}{owner_tag}*"):
        shutil.rmtree(folder, ignore_errors=True)


def check_scratch_space(folder: Path, candidates: int, adapter_bytes: int) -> None:
    free = shutil.disk_usage(folder).free
    need = candidates * adapter_bytes
    if free < need + SCRATCH_MARGIN:
        raise ScratchSpaceError(
            f"{folder} has {free / 2**20:.0f} MiB free; the {candidates} candidate adapters of a generation need "
            f"{need / 2**20:.0f} MiB (plus {SCRATCH_MARGIN // 2**20} MiB kept free). Free space in {folder.parent} "
            "(old files of other programs in /dev/shm), or start a new run with a lower search.popsize"
        )
