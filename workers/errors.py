"""The Ray side's error: raised by placement (engines that cannot be placed) and the pool (engines
that cannot start or be kept, work that failed for good); essa's CLI reports it as a run's failure."""

from __future__ import annotations


class PoolError(RuntimeError):
    """The pool cannot place, start or keep its engines, or a work item failed for good."""
