"""What a run checks before its folder, Ray or an engine exists.

Everything that can be known without an engine is known here, so that a bad input costs a second
and leaves nothing behind: the task and its data load, the sizes drawn from each split fit it, the
model folder is readable, every prompt fits the context with its completion, and the reward,
called once on a real example, returns a number. `essa align` runs it before it makes the run
folder (and again on resume, before the engines start).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from essa.config import Config
from essa.model.provision import resolve_model
from essa.rewards.plugins import RewardError, SafeReward
from essa.rewards.task import Task, load_task

# A token covers a few characters; a prompt this many characters per allowed token is refused
# without tokenizing it (a 30 MB prompt would take a while to tokenize only to be refused).
CHARS_PER_TOKEN_BOUND = 64
LONGEST_CHECKED = 8  # prompts per split whose token count is measured: the longest by characters
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
MADE_UP_COMPLETION = "Let me think step by step. The answer is 42."


@dataclass(frozen=True)
class Checked:
    """A config that passed the checks, with what they loaded (reused by the run)."""

    task: Task
    model_dir: Path


def preflight(cfg: Config) -> Checked:
    """Check `cfg` as far as it can be without an engine; raises ValueError (or a subclass) naming
    the problem and its fix. May lower task.val_size and run.heldout_size to their split's size,
    saying so, so that the saved config states the numbers really used."""
    task = load_task(cfg.task)
    check_sizes(cfg, task)
    try_reward(task, warn_only=cfg.task.reward_errors == "zero")
    model_dir = resolve_model(cfg.model.name)
    check_adapter(cfg, model_dir)
    check_prompt_lengths(cfg, task, model_dir)  # the slowest check (it loads the tokenizer): last
    return Checked(task, model_dir)


def check_sizes(cfg: Config, task: Task) -> None:
    train = len(task.examples("train"))
    if cfg.task.batch_size > train:
        raise ValueError(
            f"task.batch_size={cfg.task.batch_size} (--batch-size) is more than the {train} train prompts of task "
            f"{task.name}: each generation draws that many distinct prompts; use at most {train}"
        )
    for key, split, asked in (
        ("task.val_size", "validation", cfg.task.val_size),
        ("run.heldout_size", cfg.run.heldout_split, cfg.run.heldout_size),
    ):
        if not asked:
            continue
        available = len(task.examples(split))
        if asked > available:
            section, leaf = key.split(".")
            setattr(getattr(cfg, section), leaf, available)
            print(f"[essa] {key}={asked}: the {split} split has {available} prompts; using all {available}", flush=True)


def check_adapter(cfg: Config, model_dir: Path) -> None:
    """The target modules exist in the model's weights (their names, from the headers), and an
    adapter.init folder is a readable PEFT LoRA adapter."""
    from essa.model.provision import weight_names

    names = weight_names(model_dir)
    projections = {name.split(".")[-2] for name in names if name.endswith(".weight") and name.count(".") >= 1}
    missing = [m for m in cfg.adapter.target_modules if m not in projections]
    if names and missing:
        known = sorted(p for p in projections if p.endswith("proj")) or sorted(projections)[:12]
        raise ValueError(
            f"adapter.target_modules: {', '.join(missing)} not among the model's weights ({model_dir}); "
            f"its projections are {', '.join(known)}"
        )
    if cfg.adapter.init not in ("sft", "principal"):
        from essa.model.adapters import read_peft_adapter

        path = Path(cfg.adapter.init)
        if not path.is_dir():
            raise FileNotFoundError(
                f"adapter.init={cfg.adapter.init!r} (--init) is neither 'sft', 'principal' nor a PEFT adapter folder"
            )
        read_peft_adapter(path)  # names a missing config, a pickle file, a non-LoRA adapter


def check_prompt_lengths(cfg: Config, task: Task, model_dir: Path) -> None:
    """Every prompt scored (train, validation, held-out) fits model.max_model_len with its completion,
    and max_model_len fits the model's own context."""
    context = model_context(model_dir)
    limit = cfg.model.max_model_len
    if context is not None and limit > context:
        raise ValueError(
            f"model.max_model_len={limit} is more than the model's context of {context} tokens "
            f"(max_position_embeddings in {model_dir / 'config.json'}); use at most {context}"
        )
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        return  # no tokenizer to count with; the engine refuses such a folder with its own message
    budget = limit - cfg.generation.max_new_tokens  # validate() keeps it positive
    splits = {"train", "validation"} | ({cfg.run.heldout_split} if cfg.run.heldout_size else set())
    tokenizer = None
    for split in sorted(splits):
        examples = task.examples(split)
        chats = [task.build_messages(example) for example in examples]
        sizes = [sum(len(str(turn.get("content", ""))) for turn in chat) for chat in chats]
        for index in sorted(range(len(chats)), key=sizes.__getitem__, reverse=True)[:LONGEST_CHECKED]:
            if sizes[index] > CHARS_PER_TOKEN_BOUND * limit:
                raise ValueError(_too_long(cfg, split, index, f"{sizes[index]:,} characters", budget))
            if tokenizer is None:
                tokenizer = _tokenizer(model_dir)
            tokens = len(tokenizer.apply_chat_template(chats[index], tokenize=True, add_generation_prompt=True))
            if tokens > budget:
                raise ValueError(_too_long(cfg, split, index, f"{tokens} tokens", budget))


def _too_long(cfg: Config, split: str, index: int, size: str, budget: int) -> str:
    return (
        f"{split} prompt {index} (in the task's order) takes {size} with its chat template, more than the "
        f"{budget} tokens model.max_model_len={cfg.model.max_model_len} leaves beside "
        f"generation.max_new_tokens={cfg.generation.max_new_tokens}: shorten or drop that prompt, raise "
        "model.max_model_len (up to the model's context), or lower --max-new-tokens"
    )


def model_context(model_dir: Path) -> int | None:
    """The model's own context length from its config.json, where it says."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # resolve_model has checked the file; a folder that changed since is the engine's to report
    value = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def try_reward(task: Task, warn_only: bool = False) -> float | None:
    """Call the task's reward once, on its first train example and a made-up completion (the
    example's reference solution where the task has one), as the workers will call it. With
    `warn_only` (task.reward_errors=zero: failures are expected and scored 0) a failure is a warning."""
    example = task.examples("train")[0]
    completion = task.reference_response(example) if task.reference_response else MADE_UP_COMPLETION
    reward = SafeReward(task.score, task.reward_name)
    try:
        (value,) = reward.many([completion], [example], ["train example 0"])
    except RewardError as exc:
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        if warn_only:
            print(
                f"[essa] warning: reward {task.reward_name!r} failed on its trial call ({detail}); "
                "task.reward_errors=zero scores such calls 0 and counts them",
                file=sys.stderr,
                flush=True,
            )
            return None
        raise RewardError(
            f"reward {task.reward_name!r}, tried once before the run on train example 0 with the completion "
            f"{completion[:60]!r}, failed ({detail}). essa calls it as f(completion: str, example: dict) -> float "
            "(or a @batch_reward f(completions, examples) -> list[float], or a TRL reward f(completions, **kwargs)); "
            "docs/reward-plugins.md shows each. Fix the reward, or, if such failures are expected, start the "
            "run with task.reward_errors=zero to score them 0 and count them"
        ) from None
    except (SystemExit, KeyboardInterrupt) as exc:
        raise RewardError(
            f"reward {task.reward_name!r}, tried once before the run, raised {type(exc).__name__}"
            f"{f' ({exc})' if str(exc) else ''}: a reward must return a number, not exit"
        ) from None
    return value  # a finite float: SafeReward checked and converted it
