"""The rollout pool: starts the Ray actors and feeds them a queue of work items.

Actors: placement.py decides what each actor slot gets (GPUs, a tensor-parallel placement group,
a share of the cores) and checks that the engines fit; the pool starts one actor per slot. A
slot keeps its options and its placement group, so a replacement actor lands where the old one
was and the GPUs stay reserved through a restart.

One `evaluate` call: the candidates are cut into work items (all of them in one item for one
actor, else about two items per actor) and handed out one at a time to whichever actor is free,
so faster actors take more. A `ResultCollector` puts results back in candidate order and drops
results of earlier calls (stale) or of items it already has (duplicate).

Faults: an actor that dies, raises a system error or runs past `engine.timeout_s` is killed and
replaced in the background while the others go on, and its item goes back to the queue; an item
that fails more than `engine.max_retries` times stops the call with a PoolError. An error that
any actor would repeat (the reward's, a ValueError, ...) stops the call at once, unretried.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from essa.rewards.plugins import RewardError
from essa.workers.actor import RolloutWorker, WorkerSpec, WorkItem, WorkResult
from essa.workers.errors import PoolError
from essa.workers.placement import plan_actors, reserve_gpu_groups

# Errors that any actor would raise again on the same item: reported at once, never retried.
# Everything else (RuntimeError from the engine, OSError, MemoryError, ...) is treated as the
# actor's fault: the actor is replaced and the item retried.
USER_ERRORS = (RewardError, ValueError, TypeError, LookupError, AttributeError, NotImplementedError, ImportError)


@dataclass
class PoolResult:
    rewards: np.ndarray  # (candidates, prompts): each candidate's reward on each prompt
    tokens: np.ndarray  # (candidates,)
    timings: dict[str, float] = field(default_factory=dict)  # summed over work items
    reward_errors: int = 0
    details: dict[str, np.ndarray] = field(default_factory=dict)  # task evaluation fields, like rewards
    texts: list[list[str]] | None = None  # (candidates, prompts) completions, when asked for

    @property
    def scores(self) -> np.ndarray:
        """(candidates,): each candidate's mean reward over the prompts."""
        return self.rewards.mean(axis=1)


# The pool's fault counters that each generation's line in metrics.jsonl carries (per generation).
FAULT_COUNTS = ("restarts", "retries", "timeouts")


class Pool(Protocol):
    """What the coordinator, the calibration and the final checks need of a rollout pool.

    `RolloutPool` below is the real one; every test double (tests/essa/fake_pool.py and the ones
    derived from it) has the same surface."""

    # Counters since the pool started: at least FAULT_COUNTS (actors replaced, items retried, items
    # past engine.timeout_s); the real pool also counts items kept and results dropped as stale or duplicate.
    stats: dict[str, int]

    def evaluate(
        self,
        vectors: np.ndarray | None,
        split: str,
        indices: list[int],
        generation: int = -1,
        details: bool = False,
        texts: bool = False,
    ) -> PoolResult:
        """Each candidate (row of `vectors`, offsets in the SVD basis; None: the base model) on the same prompts."""
        ...

    def shutdown(self) -> None:
        """Stop the engines; evaluate() refuses afterwards."""
        ...


def chunk_size(candidates: int, actors: int) -> int:
    """Candidates per work item: all of them for one actor, else enough for about two items per actor."""
    return max(1, math.ceil(candidates / (1 if actors == 1 else 2 * actors)))


def cut_work(
    call: int,
    generation: int,
    vectors: np.ndarray | None,
    split: str,
    indices: list[int],
    actors: int,
    details: bool = False,
    texts: bool = False,
) -> list[WorkItem]:
    """One call's work items, in candidate order; the base model (`vectors` None) is one item."""
    if vectors is None:
        return [WorkItem(generation, [0], None, split, indices, call=call, item_id=0, details=details, texts=texts)]
    size = chunk_size(len(vectors), actors)
    return [
        WorkItem(
            generation,
            list(range(start, min(start + size, len(vectors)))),
            vectors[start : start + size],
            split,
            indices,
            call=call,
            item_id=k,
            details=details,
            texts=texts,
        )
        for k, start in enumerate(range(0, len(vectors), size))
    ]


class ResultCollector:
    """Reassembles one call's results in candidate order; pure bookkeeping, no Ray.

    `add` keeps a result only if it echoes this call's nonce and one of its items (with the same
    candidates) not yet completed; it counts what it keeps and drops in `stats` (items,
    dropped_stale, dropped_duplicate).
    """

    def __init__(self, call: int, items: list[WorkItem], stats: dict[str, int]):
        self.call, self.stats = call, stats
        self.items = {item.item_id: item for item in items}
        self.n_prompts = len(items[0].indices) if items else 0
        self.results: dict[int, WorkResult] = {}

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.items)

    def add(self, result: WorkResult) -> bool:
        item = self.items.get(result.item_id)
        if result.call != self.call or item is None or list(result.candidate_ids) != list(item.candidate_ids):
            self.stats["dropped_stale"] += 1
            return False
        if result.item_id in self.results:
            self.stats["dropped_duplicate"] += 1
            return False
        self.results[result.item_id] = result
        self.stats["items"] += 1
        return True

    def result(self) -> PoolResult:
        n = sum(len(item.candidate_ids) for item in self.items.values())
        rewards, tokens = np.zeros((n, self.n_prompts)), np.zeros(n, dtype=np.int64)
        timings: dict[str, float] = {}
        details: dict[str, np.ndarray] = {}
        texts: list[list[str]] | None = [[] for _ in range(n)] if any(r.texts for r in self.results.values()) else None
        for r in self.results.values():
            for candidate, row in zip(r.candidate_ids, r.texts or []):
                assert texts is not None  # built above: some result has texts
                texts[candidate] = row
            rewards[r.candidate_ids], tokens[r.candidate_ids] = r.rewards, r.tokens
            for key, value in r.timings.items():
                timings[key] = timings.get(key, 0.0) + value
            for key, fields in r.details.items():
                details.setdefault(key, np.zeros((n, self.n_prompts)))[r.candidate_ids] = fields
        return PoolResult(rewards, tokens, timings, sum(r.reward_errors for r in self.results.values()), details, texts)


@dataclass
class _Slot:
    """One actor position: its Ray options and the actor filling it now."""

    index: int
    options: dict
    placement_group: object = None  # tensor-parallel slots: reserved once, kept across restarts
    actor: Any = None  # a Ray actor handle of RolloutWorker
    ready: bool = False
    start_failures: int = 0  # consecutive failed starts


@dataclass
class _Flight:
    slot: _Slot
    item: WorkItem
    deadline: float  # time.monotonic() past which the actor counts as stuck


class RolloutPool:
    """Ray actors, one engine each, fed from a queue of work items (see the module docstring)."""

    def __init__(
        self,
        spec: WorkerSpec,
        gpus: int = 0,
        ray_address: str | None = None,
        timeout_s: float = 1800.0,
        workers: int = 1,
        max_retries: int = 2,
        start_timeout_s: float = 1800.0,
        tensor_parallel: int = 1,
    ):
        import ray

        self.spec, self.timeout_s, self.max_retries, self.start_timeout_s = (
            spec,
            timeout_s,
            max_retries,
            start_timeout_s,
        )
        self.stats = dict(items=0, dropped_stale=0, dropped_duplicate=0, restarts=0, timeouts=0, retries=0)
        self.slots: list[_Slot] = []
        self._call = 0  # nonce of the current evaluate() call
        self._flights: dict = {}  # ObjectRef -> _Flight; may outlive a failed call, then drained as stale
        self._starting: dict = {}  # ObjectRef of ready() -> (_Slot, deadline)
        self._owner = f"{os.getpid()}x{id(self) % 10**6}"  # this pool's engines' scratch tags start with it
        options = plan_actors(
            spec.model,
            float(spec.engine_options.get("kv_cache_gib", 2.0)),
            gpus,
            workers,
            tensor_parallel,
            ray_address,
            spec.env,
        )
        self._remote = ray.remote(RolloutWorker)
        self.slots = [_Slot(i, o) for i, o in enumerate(options)]
        try:
            if gpus > 0 and tensor_parallel > 1:
                groups = reserve_gpu_groups(
                    [slot.options for slot in self.slots], tensor_parallel, self.start_timeout_s
                )
                for slot, group in zip(self.slots, groups):
                    slot.placement_group = group
            for slot in self.slots:
                self._start(slot)
            while self._starting:  # any failure here is fatal: a bad model or task fails fast
                ref = self._wait()
                if ref is not None:
                    self._settle_start(ref, fatal=True)
                self._expire_starts(fatal=True)
        except BaseException:
            self.shutdown()  # nobody else holds this pool: free its resources for the next one
            raise

    @property
    def actors(self) -> list:
        return [slot.actor for slot in self.slots]

    def evaluate(
        self,
        vectors: np.ndarray | None,
        split: str,
        indices: list[int],
        generation: int = -1,
        details: bool = False,
        texts: bool = False,
    ) -> PoolResult:
        """Score every candidate (row of `vectors`; None: the base model) on the same prompts."""
        if not self.slots:
            raise PoolError("the rollout pool was shut down; create a new one (essa.run.rollout_pool.pool_from_config)")
        self._call += 1
        items = cut_work(
            self._call, generation, vectors, split, [int(i) for i in indices], len(self.slots), details, texts
        )
        collector = ResultCollector(self._call, items, self.stats)
        queue = deque(items)
        failures: dict[int, int] = {}  # item id -> failed tries
        while not collector.done:
            # hand the next queued item to each idle actor (one each: a free actor takes more)
            self._dispatch(queue)
            # wait for one result or started engine, at most until the nearest deadline
            ref = self._wait()
            if ref in self._starting:
                self._settle_start(ref, fatal=False)
            elif ref is not None:
                self._settle_item(ref, collector, queue, failures)
            # actors past a deadline are killed and replaced; their items go back to the queue
            self._expire_items(queue, failures)
            self._expire_starts(fatal=False)
        return collector.result()

    def _dispatch(self, queue: deque) -> None:
        busy = {flight.slot.index for flight in self._flights.values()}
        for slot in self.slots:
            if queue and slot.ready and slot.index not in busy:
                item = queue.popleft()
                ref = slot.actor.evaluate.remote(item)
                self._flights[ref] = _Flight(slot, item, time.monotonic() + self.timeout_s)

    def _wait(self):
        """The first ready ref among items in flight and starting engines, or None at a deadline."""
        import ray

        if not self._flights and not self._starting:
            raise PoolError("internal error: work is queued but no actor is running or starting")
        deadlines = [f.deadline for f in self._flights.values()] + [d for _, d in self._starting.values()]
        timeout = max(0.0, min(deadlines) - time.monotonic())
        ready, _ = ray.wait([*self._flights, *self._starting], num_returns=1, timeout=timeout)
        return ready[0] if ready else None

    def _settle_item(self, ref, collector: ResultCollector, queue: deque, failures: dict) -> None:
        """Hand a finished item's result to the collector, or act on its failure (see USER_ERRORS)."""
        import ray
        from ray.exceptions import RayError, RayTaskError

        flight = self._flights.pop(ref)
        try:
            result = ray.get(ref)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            if not isinstance(cause, USER_ERRORS):
                self._fail(flight, queue, failures, f"raised {type(cause).__name__}: {cause}")
            elif flight.item.call != self._call:
                self.stats["dropped_stale"] += 1  # an earlier call's error: that call has ended
            else:
                raise PoolError(
                    f"work item {flight.item.item_id} of {_where(flight.item)} failed with an error that retrying "
                    f"would repeat:\n{type(cause).__name__}: {cause}"
                ) from exc
        except RayError as exc:  # the actor died (RayActorError), or its worker or result was lost
            self._fail(flight, queue, failures, f"lost its actor ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        else:
            collector.add(result)

    def _expire_items(self, queue: deque, failures: dict) -> None:
        now = time.monotonic()
        for ref, flight in list(self._flights.items()):
            if now >= flight.deadline:
                del self._flights[ref]
                self.stats["timeouts"] += 1
                self._fail(flight, queue, failures, f"ran past engine.timeout_s={self.timeout_s:g}s")

    def _fail(self, flight: _Flight, queue: deque, failures: dict, what: str) -> None:
        """Replace the flight's actor; retry its item, or stop once it has failed too often."""
        self._replace(flight.slot)
        item = flight.item
        if item.call != self._call:
            self.stats["dropped_stale"] += 1
            return
        failures[item.item_id] = failures.get(item.item_id, 0) + 1
        if failures[item.item_id] > self.max_retries:
            raise PoolError(
                f"work item {item.item_id} (candidates {item.candidate_ids[0]}..{item.candidate_ids[-1]}) of "
                f"{_where(item)} failed {failures[item.item_id]} times (engine.max_retries={self.max_retries}); "
                f"the last attempt {what}. If items are just slow, raise engine.timeout_s (now {self.timeout_s:g}s) "
                "or lower search.popsize / task.batch_size / generation.max_new_tokens; if actors keep dying, look "
                "for out-of-memory kills in the Ray logs (/tmp/ray/session_latest/logs) and lower "
                "engine.kv_cache_gib or engine.workers; raise engine.max_retries to retry more."
            )
        self.stats["retries"] += 1
        queue.appendleft(item)  # the oldest work first: it holds the generation back

    def _start(self, slot: _Slot) -> None:
        """Create the slot's actor; it reports through its ready() ref (never blocks the others)."""
        # The slot's scratch tag: the new actor's engine removes what a killed one of this slot left in RAM.
        slot.actor = self._remote.options(**slot.options).remote(self.spec, f"{self._owner}-{slot.index}")
        slot.ready = False
        self._starting[slot.actor.ready.remote()] = (slot, time.monotonic() + self.start_timeout_s)

    def _replace(self, slot: _Slot) -> None:
        _kill(slot.actor)
        self.stats["restarts"] += 1
        self._start(slot)

    def _settle_start(self, ref, fatal: bool) -> None:
        import ray
        from ray.exceptions import RayError

        slot, _ = self._starting.pop(ref)
        try:
            ray.get(ref)
        except RayError as exc:
            self._start_failed(slot, f"failed to start:\n{exc}", fatal)
        else:
            slot.ready, slot.start_failures = True, 0

    def _expire_starts(self, fatal: bool) -> None:
        now = time.monotonic()
        for ref, (slot, deadline) in list(self._starting.items()):
            if now >= deadline:
                del self._starting[ref]
                self._start_failed(
                    slot, f"did not start within engine.start_timeout_s={self.start_timeout_s:g}s", fatal
                )

    def _start_failed(self, slot: _Slot, what: str, fatal: bool) -> None:
        slot.start_failures += 1
        if fatal:  # the first start of the pool: a bad model or setting, which retrying would repeat
            raise PoolError(f"inference engine {slot.index} {what}")
        if slot.start_failures > self.max_retries:
            raise PoolError(
                f"inference engine {slot.index} {what}\nIt replaced an engine that failed, and "
                f"{slot.start_failures} replacements in a row did not start (engine.max_retries={self.max_retries}). "
                "The last checkpoint is intact: fix the cause above (often memory still held by the engine that "
                "died: look for out-of-memory kills in the Ray logs, /tmp/ray/session_latest/logs), then "
                "essa align --resume RUN_DIR; raise engine.max_retries to try more often."
            )
        self._replace(slot)  # e.g. the dead actor's memory was not yet free: try again

    def shutdown(self) -> None:
        """Close idle engines (their processes, scratch files), then kill every actor."""
        import ray

        busy = {flight.slot.index for flight in self._flights.values()}
        closing = [s.actor.close.remote() for s in self.slots if s.ready and s.index not in busy]
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=30)
        for slot in self.slots:
            _kill(slot.actor)
            if slot.placement_group is not None:
                ray.util.remove_placement_group(slot.placement_group)
        self.slots, self._flights, self._starting = [], {}, {}
        from essa.workers.engine.scratch import remove_scratch

        remove_scratch(f"{self._owner}-")  # what killed actors on this machine left (other nodes: their replacements)


def _kill(actor) -> None:
    import ray

    if actor is not None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone: nothing to free
            pass


def _where(item: WorkItem) -> str:
    if item.generation >= 0:
        return f"generation {item.generation} ({item.split} split)"
    return f"an evaluation on the {item.split} split"
