"""Which prompts each generation sees: epochs of seeded permutations, with a resumable cursor.

Every candidate of a generation is scored on the same mini-batch (common random numbers: the
ranking then reflects the weights, not the luck of the draw). The state is two integers, so a
resumed run draws exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np


class PromptSampler:
    def __init__(self, size: int, batch_size: int, seed: int):
        if size < 1:
            raise ValueError("cannot sample prompts from an empty split")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.cursor = 0

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def next(self) -> list[int]:
        batch: list[int] = []
        while len(batch) < self.batch_size:
            order = self._order(self.epoch)
            take = min(self.batch_size - len(batch), self.size - self.cursor)
            batch += order[self.cursor : self.cursor + take].tolist()
            self.cursor += take
            if self.cursor == self.size:
                self.epoch, self.cursor = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict:
        return {
            "size": self.size,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "cursor": self.cursor,
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["size"], state["seed"]) != (self.size, self.seed):
            raise ValueError(
                f"sampler state is for {state['size']} prompts / seed {state['seed']}, "
                f"this run has {self.size} / {self.seed}: the task data or seed changed since the checkpoint"
            )
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
