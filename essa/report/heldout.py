"""Before and after on prompts the search never saw: the warm start against the exported point.

Both are scored on the same prompts, each in a pool call of its own, so every difference is the
adapter's and not the batch's; the base model is scored on the same prompts too, so that the gain
of the whole pipeline (warm start and search) is shown beside the search's own (``"from_base"`` in
heldout.json). The
headline is the task's standard per-prompt metric (GSM8K and MATH-500: the answer is right;
IFEval: every instruction of the prompt followed, strict; Countdown: the equation is right; the
jsonl task: the reward itself), with a paired 95% interval (essa.stats). A reward plugin on a
built-in task (a shaped training reward) leaves that headline as it is and is reported beside it,
paired too; the task's other standard figures come along, unpaired.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from essa.io import atomic_write_json
from essa.run.run_files import RunFiles
from essa.stats import paired_difference


def compare_heldout(
    pool,
    task,
    vectors: np.ndarray,
    split: str,
    size: int,
    run_dir: Path,
    out: Path | None = None,
    label: str = "held-out",
) -> dict:
    """Score `vectors` = [before, after] on the first `size` prompts of `split`; print and save the result
    (to `out`, by default RunFiles(run_dir).heldout; the forgetting check, essa.report.forgetting, gives its own
    file and label)."""
    n = min(size, len(task.examples(split)))
    same = bool(np.array_equal(vectors[0], vectors[1]))
    # Each point in a call of its own, as validation scores it: a greedy completion can depend on what
    # else shares its batch (two copies of one adapter in one call differed; docs/benchmarks.md), and
    # alone a point meets the same batches whenever it is scored. An export that is the warm start
    # itself is scored once, its difference exactly 0.
    scored = [pool.evaluate(row[None, :], split, list(range(n)), details=True) for row in vectors[: 1 if same else 2]]
    result = _stack(scored * 2 if same else scored)
    per_prompt = task.headline_scores(result.rewards, result.details)
    base = pool.evaluate(None, split, list(range(n)), details=True)
    base_per_prompt = task.headline_scores(base.rewards, base.details)[0]
    metric = task.headline or "reward"
    diff = paired_difference(per_prompt[0], per_prompt[1])
    from_base = paired_difference(base_per_prompt, per_prompt[1])
    reward_diff = paired_difference(result.rewards[0], result.rewards[1])  # the training reward's own change
    figures = {}
    if task.aggregate is not None and result.details:
        for side, row in (("before", 0), ("after", 1)):
            figures[side] = task.aggregate({k: v[row].tolist() for k, v in result.details.items()})
    record = {
        "task": task.name,
        "split": split,
        "prompts": n,
        "metric": metric,
        **diff.as_record(),
        "same_point": same,
        "reward_before": float(result.rewards[0].mean()),
        "reward_after": float(result.rewards[1].mean()),
        "reward": {"name": task.reward_name, **reward_diff.as_record()},
        "standard": figures,
        "from_base": {**from_base.as_record(), "reward_base": float(base.rewards[0].mean())},
    }
    atomic_write_json(out or RunFiles(run_dir).heldout, record)
    rate = set(np.unique(np.concatenate([per_prompt.ravel(), base_per_prompt])).tolist()) <= {0.0, 1.0}
    if same:
        print(
            f"[essa] {label}: the exported point is the warm start itself (no validated mean beat it); scored once",
            flush=True,
        )
    print(f"[essa] {label} {split} ({metric}), warm start -> best: {diff.describe(percent=rate)}", flush=True)
    print(f"[essa] {label} {split} ({metric}), base model -> best: {from_base.describe(percent=rate)}", flush=True)
    if task.headline:
        print(
            f"[essa] {label} {split} (reward: {task.reward_name}), warm start -> best: {reward_diff.describe()}",
            flush=True,
        )
    for key in figures.get("before", {}):
        print(f"[essa]   {key}: {figures['before'][key]:.4f} -> {figures['after'][key]:.4f}", flush=True)
    return record


def _stack(results: list):
    """One pool result whose rows are those of `results`, in order."""
    return dataclasses.replace(
        results[0],
        rewards=np.vstack([r.rewards for r in results]),
        tokens=np.concatenate([r.tokens for r in results]),
        details={k: np.vstack([r.details[k] for r in results]) for k in results[0].details},
    )
