"""Runs a small essa search with the in-process FakePool and SIGKILLs itself at a chosen point.

    python coordinator_kill_driver.py MODEL_DIR RUN_DIR POINT GENERATION

POINT: "generation" (inside the pool's evaluate of that generation), "arrays" (in that
generation's checkpoint, after arrays.npz and before state.json), "rename" (after the checkpoint
directory is in place, before `latest` names it) or "metrics" (after the metrics line, before the
checkpoint). Used by test_coordinator_kill.py; not a test itself.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "essa"))
from fake_pool import FakePool, tiny_config

import essa.run.checkpoint as checkpoint
import essa.run.coordinator as coordinator


def config(model_dir: str):
    """fake_pool.tiny_config with a checkpoint after every one of 6 generations."""
    return tiny_config(model_dir, "run.checkpoint_every=1", "search.generations=6")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(model_dir: str, run_dir: str, point: str, generation: int) -> None:
    pool_factory = FakePool
    if point == "generation":

        class DyingPool(FakePool):
            def evaluate(self, vectors, split, indices, generation=-1, **kw):
                if generation == target:
                    die()
                return super().evaluate(vectors, split, indices, generation, **kw)

        target, pool_factory = generation, DyingPool
    elif point == "arrays":
        write_json = checkpoint.atomic_write_json
        checkpoint.atomic_write_json = lambda path, obj: (
            die() if Path(path).name == "state.json" and obj.get("generation") == generation else write_json(path, obj)
        )
    elif point == "rename":
        write_text = checkpoint.atomic_write_text
        name = f"gen_{generation:06d}"
        checkpoint.atomic_write_text = lambda path, text: (
            die() if Path(path).name == "latest" and text.strip() == name else write_text(path, text)
        )
    elif point == "metrics":
        save = coordinator.save_checkpoint
        coordinator.save_checkpoint = lambda run, ckpt, keep=0: (
            die() if ckpt.generation == generation else save(run, ckpt, keep)
        )
    else:
        raise SystemExit(f"unknown point {point!r}")
    coordinator.align(config(model_dir), Path(run_dir), resume=False, pool_factory=pool_factory)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
