"""The model card of an exported adapter: README.md with Hugging Face metadata, from the run's files.

What it states comes from the run folder alone: config.yaml (task, method, hyperparameters),
metrics.jsonl (validation of the base model, the warm start and the best point), heldout.json
(the held-out comparison, when the run made one), forgetting.json (the forgetting check, likewise), calibration.json (the measured initial step),
command.txt (the command that started the run) and reward.png (the curve, copied beside it).
Nothing is claimed that the run did not measure.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

from essa.config import Config
from essa.report.status import validations
from essa.run.run_dir import read_metrics
from essa.run.run_files import RunFiles


def model_card(run_dir: Path, cfg: Config, base_model: str, best: dict, has_plot: bool, merged: bool = False) -> str:
    """The card's text; `base_model` as the export names it (essa.run.run_dir.shared_base_name: no local path);
    `merged`: the folder is the base model with the adapter merged in (essa.model.merge)."""
    run_dir = Path(run_dir)
    v = validations(read_metrics(run_dir))
    done = v["generations"][-1]["generation"] + 1 if v["generations"] else 0
    sigma = _sigma(run_dir, cfg)
    s, a = cfg.search, cfg.adapter
    tags = [
        "essa",
        "lora",
        "peft",
        "evolution-strategies",
        "antithetic-es" if s.strategy == "es" else "cma-es",
        cfg.task.name,
    ]
    lines = [
        "---",
        _metadata(run_dir, cfg, base_model, tags, merged).to_yaml(),
        "---",
        "",
        f"# {run_dir.resolve().name}",
        "",
        (
            "`" + base_model + "` with a LoRA adapter merged into its weights"
            if merged
            else f"A LoRA adapter for `{base_model}`"
        )
        + f", aligned to the `{cfg.task.name}` task"
        + (
            f" with the reward `{Path(cfg.task.reward).name if '/' in cfg.task.reward else cfg.task.reward}`"
            if cfg.task.reward
            else ""
        )
        + " by essa, without gradients: "
        + ("an evolution strategy (antithetic ES)" if s.strategy == "es" else "CMA-ES")
        + " searched the",
        "singular values of a LoRA adapter whose singular vectors stay fixed, scoring every candidate",
        "with vLLM. This folder is the best point of the search on the validation prompts.",
        "",
        "## How it was made",
        "",
        "| setting | value |",
        "|---|---|",
        f"| warm start (`adapter.init`) | {a.init} |",
        f"| LoRA rank, target modules | {a.rank}, {', '.join(a.target_modules)} |",
        f"| searched singular values per factor (`adapter.alpha_fraction`) | {a.alpha_fraction:g} of the rank |",
        f"| strategy | {s.strategy}, λ = {s.popsize} candidates per generation |",
        f"| prompts per candidate per generation (B) | {cfg.task.batch_size} |",
        f"| generations run | {done} (of {s.generations} configured) |",
        f"| initial step σ | {sigma} |",
        f"| decoding | temperature {cfg.generation.temperature:g}, up to {cfg.generation.max_new_tokens} new tokens |",
        f"| seed | {s.seed} |",
        "",
        "## Scores",
        "",
        *_scores(v, best, cfg),
        *_heldout(run_dir),
        *_forgetting(run_dir),
    ]
    if has_plot:
        lines += ["", "![reward against generation and search time](reward.png)"]
    command = RunFiles(run_dir).command
    if command.is_file():
        lines += [
            "",
            "## Command",
            "",
            "(folders of local paths left out)",
            "",
            "```bash",
            shareable(command.read_text().strip()),
            "```",
        ]
    if merged:
        return "\n".join(
            lines
            + [
                "",
                "## Use",
                "",
                "```python",
                "from transformers import AutoModelForCausalLM",
                "",
                'model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/FOLDER")',
                "```",
                "",
                'vLLM: `LLM(model="PATH/TO/THIS/FOLDER")`.',
                "",
            ]
        )
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base_model}"), "PATH/TO/THIS/FOLDER")',
        "```",
        "",
        'vLLM: `LLM(model=..., enable_lora=True)` and `LoRARequest("essa", 1, "PATH/TO/THIS/FOLDER")`.',
        "",
    ]
    return "\n".join(lines)


def _metadata(run_dir: Path, cfg: Config, base_model: str, tags: list[str], merged: bool):
    """The Hub's YAML header (huggingface_hub's ModelCardData), the held-out results as its model-index."""
    from huggingface_hub import EvalResult, ModelCardData

    from essa.rewards.task import TASKS

    hub_id = getattr(importlib.import_module(TASKS[cfg.task.name]), "HUB_ID", None) if cfg.task.name in TASKS else None
    results = []
    path = RunFiles(run_dir).heldout
    if path.is_file():
        h = json.loads(path.read_text())
        results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=hub_id or cfg.task.name,
                dataset_name=cfg.task.name,
                dataset_split=h["split"],
                metric_type=h["metric"],
                metric_value=round(float(h["after"]), 6),
                metric_name=f"{h['metric']} on the first {h['prompts']} {h['split']} prompts (warm start {h['before']:.4f})",
            )
        )
    relation: dict[str, Any] = {"base_model_relation": "finetune"} if merged else {}
    return ModelCardData(
        base_model=base_model,
        library_name="transformers" if merged else "peft",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=[hub_id] if hub_id else None,
        model_name=run_dir.resolve().name,
        eval_results=results or None,
        **relation,
    )


def shareable(text: str) -> str:
    """`text` without the folders of absolute or home paths (/home/me/runs/x -> x): a card is for sharing."""
    return re.sub(r"(?<![\w.])(?:~|)/(?:[^\s/:=]+/)+", "", text)


def _sigma(run_dir: Path, cfg: Config) -> str:
    if cfg.search.sigma is not None:
        return f"{cfg.search.sigma:g} (set), in units of each factor's RMS singular value"
    path = RunFiles(run_dir).calibration
    if path.is_file():
        cal = json.loads(path.read_text())
        return f"{cal['sigma']:g} (calibrated at the start: {cal.get('reason', '')})"
    return "calibrated at the start"


def _scores(v: dict, best: dict, cfg: Config) -> list[str]:
    def num(value):
        return "not measured" if value is None else f"{value:.4f}"

    return [
        f"Mean reward on the first {cfg.task.val_size} validation prompts (greedy), which the search never trained on:",
        "",
        "| | validation reward |",
        "|---|---|",
        f"| base model | {num(v['base'])} |",
        f"| warm start | {num(v['start'])} |",
        (
            "| this adapter: the warm start itself (no validated mean beat it) |"
            if not best.get("generation")
            else f"| this adapter (after generation {best['generation']}) |"
        )
        + f" {num(best.get('validation'))} |",
    ]


def _forgetting(run_dir: Path) -> list[str]:
    path = RunFiles(run_dir).forgetting
    if not path.is_file():
        return []
    h = json.loads(path.read_text())
    b = h["from_base"]
    task = f"`{h['task']}`" if h.get("task") else "another task"
    return [
        "",
        f"Forgetting check on {task}: the first {h['prompts']} prompts of its `{h['split']}` split "
        f"({h['metric']}), warm start against this adapter: {h['before']:.4f} -> {h['after']:.4f}, difference "
        f"{h['diff']:+.4f} (paired 95% interval [{h['low']:+.4f}, {h['high']:+.4f}]); the base model "
        f"{b['before']:.4f}.",
    ]


def _heldout(run_dir: Path) -> list[str]:
    path = RunFiles(run_dir).heldout
    if not path.is_file():
        return ["", "No held-out comparison was run (`run.heldout_size` was 0)."]
    h = json.loads(path.read_text())
    return [
        "",
        f"Held-out, the first {h['prompts']} prompts of the `{h['split']}` split ({h['metric']}), warm start "
        f"against this adapter: {h['before']:.4f} -> {h['after']:.4f}, difference {h['diff']:+.4f} "
        f"(paired 95% interval [{h['low']:+.4f}, {h['high']:+.4f}])."
        + (
            f" The base model on the same prompts: {b['before']:.4f} (this adapter {b['diff']:+.4f}, "
            f"[{b['low']:+.4f}, {b['high']:+.4f}])."
            if (b := h.get("from_base"))
            else ""
        ),
    ]
