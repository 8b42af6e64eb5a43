"""A run directory: its creation and opening, its lock, its metrics log.

Its files are named in essa.run.run_files.RunFiles (config.yaml, warm_start/, basis.safetensors,
command.txt, inputs.json, calibration.json, metrics.jsonl, checkpoints/, tensorboard/,
heldout.json, forgetting.json, reward.png, adapter/, .lock), each with what writes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from essa.config import Config, from_yaml_file, to_yaml
from essa.io import atomic_write_text
from essa.model.adapters import write_peft_adapter
from essa.model.provision import EMBEDDED
from essa.model.svd_lora import SVDLoRA
from essa.run.inputs import record_inputs
from essa.run.run_files import RunFiles


class RunInUseError(RuntimeError):
    """Another process holds the run directory."""


def new_run_dir(cfg: Config) -> Path:
    """run.run_dir, or a fresh runs/<task>-<time>-<random> that no other run can have taken."""
    if cfg.run.run_dir:
        path = Path(cfg.run.run_dir)
        check_new_run_folder(path)
        return path
    while True:
        path = Path("runs") / f"{cfg.task.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()  # atomic: two runs started in the same second get different folders
            return path
        except FileExistsError:
            continue


@contextmanager
def hold_run(run_dir: Path):
    """One writer per run directory: an OS lock on RUN/.lock for as long as the block runs.

    The kernel drops the lock when the process ends in any way (even SIGKILL), so a crashed run
    never blocks its own resume. A second holder is refused with the first one's pid and host.
    """
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(RunFiles(run_dir).lock, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunInUseError(
                f"{run_dir} is in use by {holder}; wait for that run to end or stop it, "
                "then resume with essa align --resume"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock
        if created:
            remove_unstarted(run_dir)


def remove_unstarted(run_dir: Path) -> None:
    """Remove a run folder that essa made and no run started in (nothing in it but the lock file):
    a start that failed on a bad task, data or reward leaves nothing for the user to find."""
    try:
        lock = RunFiles(run_dir).lock
        if {p.name for p in run_dir.iterdir()} <= {lock.name}:
            lock.unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:
        pass  # gone already, or another process put something there: leave it


def hub_name(model: str) -> str:
    """What the run's own adapters (warm_start/) name as their base model: the hub id of an embedded
    model, else the model as given (a local folder's path, so that the folder loads here)."""
    spec = EMBEDDED.get(model)
    return spec.hub_id if spec else model


def shared_base_name(model: str) -> str:
    """What an export, which is for sharing, names as its base model: never a local path.

    A local model folder is named by the hub id its config.json records (``_name_or_path``, as
    transformers saves it) when that is one, else by the folder's own name.
    """
    name = hub_name(model)
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return name  # a hub id
    try:
        recorded = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if (
        isinstance(recorded, str)
        and recorded.count("/") == 1
        and not recorded.startswith((".", "/", "~"))
        and not Path(recorded).expanduser().exists()
    ):
        return recorded
    return folder.resolve().name


def check_new_run_folder(path: Path) -> None:
    """--run-dir for a new run: a new or empty folder. A user's folder holding other files is refused
    (the run would write beside them), as is a file; an existing run is continued with --resume."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--run-dir {path} is a file, not a folder; name a new folder for the run")
    refuse_existing_run(path)
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if p.name != RunFiles(path).lock.name)
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise FileExistsError(
                f"--run-dir {path} already holds files that are not an essa run ({shown}); essa writes a run "
                "only into a new or empty folder: name another one"
            )


def refuse_existing_run(run_dir: Path) -> None:
    if RunFiles(run_dir).config.exists():
        raise FileExistsError(f"{run_dir} already holds a run; continue it with: essa align --resume {run_dir}")


def create_run(cfg: Config, run_dir: Path, warm: tuple[dict, int, float], inputs: dict | None = None) -> SVDLoRA:
    """Lay out a new run around its warm start (lora, rank, lora_alpha; essa.model.warm_start): the start as a
    PEFT folder, its SVD basis, the inputs' fingerprint (essa.run.inputs), then the config that marks the
    run usable. Refuses to overwrite an existing run."""
    refuse_existing_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lora, rank, lora_alpha = warm
    write_peft_adapter(RunFiles(run_dir).warm_start, lora, rank, lora_alpha, hub_name(cfg.model.name))
    basis = SVDLoRA.from_lora(lora, rank, lora_alpha, cfg.adapter.alpha_fraction)
    basis.save(RunFiles(run_dir).basis)
    if inputs is not None:
        record_inputs(run_dir, inputs)
    atomic_write_text(RunFiles(run_dir).command, command_line() + "\n")
    atomic_write_text(RunFiles(run_dir).config, to_yaml(cfg))  # last: its presence marks a usable run
    return basis


def command_line() -> str:
    """This process's command as a user would type it (`essa ...` for the CLI)."""
    args = sys.argv[1:]
    if Path(sys.argv[0]).name == "essa" or sys.argv[0].endswith(("essa/cli.py", "essa.cli")):
        return shlex.join(["essa", *args])
    return shlex.join([Path(sys.executable).name, *sys.argv])


def open_run(run_dir: Path) -> tuple[Config, SVDLoRA]:
    if not RunFiles(run_dir).config.is_file():
        raise FileNotFoundError(f"{run_dir} is not an essa run directory (no config.yaml)")
    files = RunFiles(run_dir)
    return from_yaml_file(files.config), SVDLoRA.load(files.basis)


def read_metrics(run_dir: Path) -> list[dict]:
    """The metrics lines; a torn last line (a kill mid-write) is dropped with a warning."""
    path = RunFiles(run_dir).metrics
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                print(
                    f"[essa] warning: {path} ends in a torn line (the run was killed while writing it); "
                    "dropping it: that generation is redone on resume",
                    file=sys.stderr,
                    flush=True,
                )
                break
            raise ValueError(
                f"{path} line {number} is corrupt ({exc.msg}); restore the file or remove that "
                "line and the ones after it, then resume"
            ) from exc
    return records


def search_seconds(records: list[dict], generations_done: int) -> float:
    """The search's time over its first `generations_done` generations, as the metrics lines
    (read_metrics) record it: each generation's own time and its validation's (what
    search.max_minutes counts)."""
    return sum(
        float(times.get("total", 0.0)) + float(times.get("validate", 0.0))
        for r in records
        if 0 <= r.get("generation", -1) < generations_done
        for times in [r.get("time") or {}]
    )


def truncate_metrics(run_dir: Path, generations_done: int) -> None:
    """Drop log lines of generations after the checkpoint being resumed: they will be redone. With no
    checkpoint (0 done) the start's validation line goes too, since the start is validated again."""
    kept = [r for r in read_metrics(run_dir) if r.get("generation", -1) < generations_done] if generations_done else []
    atomic_write_text(RunFiles(run_dir).metrics, "".join(json.dumps(r) + "\n" for r in kept))


def append_metrics(run_dir: Path, record: dict) -> None:
    """One line, flushed to disk before the call returns."""
    with open(RunFiles(run_dir).metrics, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
