"""Typed run configuration: dataclasses merged with OmegaConf from a task YAML, a user file and overrides.

Precedence, lowest first: the dataclass defaults, `configs/<task>.yaml` (shipped in the package),
`--config FILE`, CLI flags, then `key=value` overrides. Unknown keys fail with the list of valid
ones; cross-field problems fail with the values involved and the fix.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException
from omegaconf.nodes import StringNode

from essa.model.dtypes import DTYPES
from essa.rewards.task import TASKS
from essa.search import FITNESS_MODES, STRATEGIES


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # embedded name, local folder or hub id
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32 (auto: bf16 unless the CPU lacks native bf16)
    max_model_len: int = 1024
    quantization: str = "none"  # none | int8 | int4: the base the engines load (quantized bases use lora mode)


@dataclass
class TaskConfig:
    name: str = "gsm8k"
    data_dir: str | None = None  # defaults to $ESSA_DATA_DIR; unset means the hub
    system_prompt: str | None = None  # None: the task's default
    few_shot: int = 0  # solved examples shown before each prompt as earlier chat turns (tasks with references)
    reward: str | None = None  # None: the task's reward; else FILE.py:function, module:function or entry point
    reward_errors: str = "raise"  # raise | zero (score a failing reward call 0 and count it)
    data_file: str | None = None  # the jsonl task: the user's prompts
    prompt_field: str = "prompt"  # the jsonl task: which field holds the prompt
    batch_size: int = 16  # prompts per candidate per generation (B), shared by all candidates
    val_size: int = 64  # validation prompts used to score the distribution mean


@dataclass
class AdapterConfig:
    init: str = "sft"  # "sft" (trained once per model/task/rank/data, then cached), "principal" or a PEFT LoRA folder
    rank: int = 8
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    alpha_fraction: float = 0.25  # α: search the top ⌊α·r⌋ singular values of each factor (docs/results.md)
    principal_scale: float = 0.05  # principal init starts at B·A = scale · (top-r part of W)


@dataclass
class SFTConfig:
    """The supervised warm start (`essa sft`, `adapter.init=sft`)."""

    max_examples: int | None = 1024  # SFT pairs used (None: all); reference tasks take the first N of the SFT split
    epochs: int = 1
    learning_rate: float = 2e-4
    batch_size: int = 8  # sequences per optimizer step
    max_length: int = 768  # prompt + response tokens; longer pairs are skipped and counted
    lora_alpha: float | None = None  # None: 2 x rank
    seed: int = 0
    # Tasks without reference responses (IFEval, jsonl): rejection sampling from the base model.
    samples_per_prompt: int = 4
    sample_temperature: float = 0.8
    min_reward: float = 1.0  # keep a sample whose reward is at least this (1.0: full reward)


@dataclass
class SearchConfig:
    strategy: str = "cma_auto"
    generations: int = 20
    # Minutes of search (generations and their validations, summed over resumes) after which the
    # generation under way is the last; 0: no limit. The held-out comparison and export follow.
    max_minutes: float = 0.0
    popsize: int = 16
    sigma: float | None = None  # initial step in units of each factor's RMS singular value; None: calibrate
    calibration_sigmas: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    calibration_snr: float = 1.0  # calibration picks the smallest step whose between-candidate snr reaches this
    # cma_*: c_m in (0, 1], the mean moves c_m * sigma * (weighted step of the best); es: the mean
    # moves mean_lr * sigma * (z-scored gradient estimate), ES at Scale's rate is 0.5
    mean_lr: float = 1.0
    fitness: str = "mean"  # mean | prompt_zscore: how a candidate's per-prompt rewards become its score
    # When the mean validates worse than the best validated point beyond noise (the paired 95%
    # interval of the difference lies below 0), continue from that point with sigma multiplied by
    # this; 0: never (the mean goes on from where it is).
    backtrack: float = 0.0
    mirrored: bool = False  # candidates in pairs mean +/- step; the better of each pair is kept
    seed: int = 0


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # greedy: candidates differ only by their weights


FORGETTING_TASKS = ("gsm8k", "ifeval", "math500", "countdown")  # built-in tasks with a test split
LORA_KERNELS = ("shared", "grouped", "vllm")  # workers/engine/: lora_shared_basis.py, lora_grouped.py; vLLM's own ops


@dataclass
class EngineConfig:
    gpus: int = 0  # 0: CPU engines (see workers); N: N GPUs, one engine per tensor_parallel_size of them
    tensor_parallel_size: int = 1  # GPUs per engine (t); t > 1: each engine's GPUs are one Ray placement group
    mode: str = "auto"  # merge | lora | auto (lora; see essa.workers.engine.resolve_mode)
    lora_kernel: str = "shared"  # lora mode on CPU: shared (the basis' matmuls for all candidates) | grouped | vllm
    kv_cache_gib: float = 2.0  # CPU only: KV-cache memory per engine
    gpu_memory_utilization: float = 0.85  # GPU only
    enforce_eager: bool = False
    # vLLM's engine core in the worker's own process: a generate call queues all its requests before
    # the first step, so batches, and with them greedy completions, do not depend on timing (vLLM's
    # Reproducibility guide). false: its separate engine-core process, which batches requests as they
    # arrive; the same candidate can then score differently on a loaded machine.
    deterministic: bool = True
    ray_address: str | None = None  # join this Ray cluster; None: $RAY_ADDRESS or a local one
    timeout_s: float = 1800.0  # one work item's limit; then its actor is replaced and the item retried
    workers: int = 1  # CPU only (gpus=0): engines on this machine, each bound to its own share of the cores
    max_retries: int = 2  # retries of one work item whose actor died, failed or timed out, then a clear error
    start_timeout_s: float = 1800.0  # one engine's limit to start (load, compile) before it counts as failed


@dataclass
class RunConfig:
    run_dir: str | None = None  # None: runs/<task>-<timestamp>
    validate_every: int = 5
    checkpoint_every: int = 5
    keep_checkpoints: int = 5  # the newest K checkpoints stay in RUN/checkpoints (0: all)
    heldout_size: int = 0  # at the end, warm start vs best on this many prompts of heldout_split (0: skip)
    heldout_split: str = "test"
    tensorboard: bool = True  # TensorBoard scalars in RUN/tensorboard/ beside metrics.jsonl (essa.run.run_log)
    wandb_project: str | None = None  # also log the scalars to this Weights & Biases project (needs wandb)
    forgetting_task: str | None = None  # at the end, also compare warm start, best and base on this task's test split
    forgetting_size: int = 100  # prompts of that split


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    run: RunConfig = field(default_factory=RunConfig)


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message says which and how to fix it."""


def _load_yaml(path: Path):
    """A user's YAML file as an OmegaConf node; a syntax error names the file, line and column."""
    import yaml

    try:
        node = OmegaConf.load(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a text (UTF-8) file (byte {exc.start}); --config takes a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{path} is not valid YAML{where}: {problem}; fix that line (keys as in configs/gsm8k.yaml)"
        ) from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path} must hold a YAML mapping of sections (search:, task:, ...), not a list")
    return node


def _parse_override(item: str, schema: DictConfig) -> DictConfig:
    """One `key=value` override as a config layer.

    A text field takes its value verbatim ("001" stays "001", "a #b" keeps its "#b", "a: b" is not a
    mapping), or, in matching quotes, as a YAML string; `null` clears an optional one. Any other
    field's value is read as YAML, as OmegaConf reads a dotlist; a value YAML cannot read, or one a
    comment would cut short, is refused naming the override.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not key=value (e.g. search.popsize=32)")
    if "." not in key and key in schema and OmegaConf.is_dict(schema[key]):
        raise ConfigError(
            f"override {item!r}: {key} is a section, not a value; set one of its keys, e.g. "
            f"{key}.{next(iter(schema[key]))}=..."
        )
    node: Any = schema
    for part in key.split("."):
        node = node._get_node(part) if isinstance(node, DictConfig) and part in node else None
    if isinstance(node, StringNode) and not (raw.strip() in ("null", "~") and node._is_optional()):
        *parents, leaf = key.split(".")
        nested: dict = {leaf: _unquoted(raw)}
        for part in reversed(parents):
            nested = {part: nested}
        return OmegaConf.create(nested)
    if re.search(r"(^|\s)#", raw):
        raise ConfigError(
            f"override {item!r}: YAML would read the text from '#' on as a comment and drop it; "
            f"give {key} a value without it"
        )
    try:
        return OmegaConf.from_dotlist([f"{key}={raw}"])
    except Exception as exc:  # noqa: BLE001 - yaml's ScannerError / ParserError, and whatever OmegaConf wraps them in
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({problem}); quote it or write a list as [a,b]"
        ) from None


def _unquoted(raw: str) -> str:
    """A text value in matching quotes is a YAML string ('a #b', "line\\n"); any other is verbatim."""
    import yaml

    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
        return value if isinstance(value, str) else raw
    return raw


def valid_keys(node: Any = None, prefix: str = "") -> list[str]:
    node = OmegaConf.structured(Config) if node is None else node
    keys = []
    for key in node:
        value = node[key]
        path = f"{prefix}{key}"
        keys += valid_keys(value, path + ".") if OmegaConf.is_dict(value) else [path]
    return keys


def packaged_config(task: str) -> Path | None:
    path = resources.files("essa.configs").joinpath(f"{task}.yaml")
    return Path(str(path)) if path.is_file() else None


def load_config(
    task: str | None = None,
    config_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> Config:
    """Build a validated Config. `flags` are dotted keys from CLI options (None values ignored)."""
    layers = [OmegaConf.structured(Config)]
    if base is not None:
        layers.append(OmegaConf.create(base))
    if task is not None:
        yaml = packaged_config(task)
        if yaml is not None:
            layers.append(OmegaConf.load(yaml))
        layers.append(OmegaConf.create({"task": {"name": task}}))
    if config_file is not None:
        path = Path(config_file)
        if path.is_dir():
            raise ConfigError(f"--config {path} is a folder; name a YAML file (see configs/gsm8k.yaml for every key)")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        layers.append(_load_yaml(path))
    # Flags are typed by argparse already: merged as values, not re-parsed as YAML ("001" stays "001").
    nested: dict = {}
    for key, value in (flags or {}).items():
        if value is not None:
            *parents, leaf = key.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    layers.append(OmegaConf.create(nested))
    for item in overrides or []:
        layers.append(_parse_override(item, layers[0]))
    try:
        merged = OmegaConf.merge(*layers)
    except (ConfigKeyError, ConfigAttributeError) as exc:
        raise ConfigError(_unknown_key_message(exc)) from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid configuration: {exc.msg if hasattr(exc, 'msg') else exc}") from exc
    cfg = cast(Config, OmegaConf.to_object(merged))  # a structured config: OmegaConf builds the dataclass
    if task is not None and cfg.task.name != task:
        raise ConfigError(
            f"--task {task} and task.name={cfg.task.name} disagree: the task's settings come from --task, so "
            f"name the task once (--task {cfg.task.name}, without task.name)"
        )
    validate(cfg)
    # Workers run in other directories: file paths the user gave relative to here become absolute.
    if cfg.task.reward:
        from essa.rewards.plugins import resolve_reward_spec

        cfg.task.reward = resolve_reward_spec(cfg.task.reward)
    if cfg.task.data_dir:
        cfg.task.data_dir = str(Path(cfg.task.data_dir).expanduser().resolve())
    if cfg.task.data_file:
        cfg.task.data_file = str(Path(cfg.task.data_file).expanduser().resolve())
    return cfg


# What `essa align --resume` may change in a saved run: how long it goes, where and how its engines
# run, how often it checkpoints. None of them changes which candidates are drawn or how a candidate is
# scored (greedy decoding on the same engine kind gives the same rewards on any placement), so a
# resumed run stays the run it was. Everything else (task, data, reward, model, adapter, search,
# generation, engine.mode / lora_kernel / deterministic) is refused.
RESUMABLE_KEYS = (
    "search.generations",
    "search.max_minutes",
    "engine.gpus",
    "engine.workers",
    "engine.tensor_parallel_size",
    "engine.ray_address",
    "engine.timeout_s",
    "engine.start_timeout_s",
    "engine.max_retries",
    "engine.kv_cache_gib",
    "engine.gpu_memory_utilization",
    "run.checkpoint_every",
    "run.keep_checkpoints",
    "run.tensorboard",
    "run.wandb_project",
    # where the data lives may change; what it holds may not (RUN/inputs.json, essa.run.inputs)
    "task.data_dir",
    "task.data_file",
)


def resume_config(
    saved: Config, flags: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> tuple[Config, dict[str, tuple[Any, Any]]]:
    """The saved config with a resume's changes applied and validated, and what changed
    ({key: (old, new)}); a change outside RESUMABLE_KEYS is refused, naming it."""
    before = _flat(saved)
    base = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(saved)))  # a DictConfig's container
    cfg = load_config(base=base, flags=flags, overrides=overrides)
    after = _flat(cfg)
    changed = {key: (before.get(key), value) for key, value in after.items() if before.get(key) != value}
    refused = [key for key in changed if key not in RESUMABLE_KEYS]
    if refused:
        listed = ", ".join(f"{key} ({changed[key][0]!r} -> {changed[key][1]!r})" for key in refused)
        raise ConfigError(
            f"--resume continues a run as it was saved; {listed} cannot change (it would change what is searched "
            f"or how it is scored). A resume may change only: {', '.join(RESUMABLE_KEYS)}. Start a new run for the rest"
        )
    return cfg, changed


def _flat(cfg: Config) -> dict[str, Any]:
    """Every leaf of a config by its dotted key (the keys valid_keys lists)."""
    node = OmegaConf.structured(cfg)
    values = {key: OmegaConf.select(node, key) for key in valid_keys(node)}
    return {key: OmegaConf.to_container(v) if OmegaConf.is_list(v) else v for key, v in values.items()}


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml_file(path: str | Path) -> Config:
    """The resolved config a run saved; validated like any other."""
    import yaml

    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = (getattr(exc, "problem", None) or str(exc).strip() or type(exc).__name__).splitlines()[0]
        problem += f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path} is damaged ({problem}): essa writes it once, atomically, at the start of a run, so something "
            "else changed it; restore it from a copy or from the run's start (command.txt holds the command)"
        ) from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} is damaged (not a mapping of sections): restore it from a copy")
    return load_config(base=cast(dict[str, Any], saved))


MIN_MODEL_LEN = 64  # tokens: a chat template and a short prompt alone take about this many


def validate(cfg: Config) -> None:
    problems = []
    s, t, a, e, r = cfg.search, cfg.task, cfg.adapter, cfg.engine, cfg.run
    if s.popsize < 2:
        problems.append(f"search.popsize={s.popsize}: CMA-ES needs at least 2 candidates")
    if s.sigma is not None and not s.sigma > 0:
        problems.append(f"search.sigma={s.sigma}: the initial step must be positive, or null to calibrate it")
    if not s.calibration_sigmas or any(not v > 0 for v in s.calibration_sigmas):
        problems.append(f"search.calibration_sigmas={list(s.calibration_sigmas)}: give one or more positive steps")
    if not 0 <= s.backtrack < 1:
        problems.append(f"search.backtrack={s.backtrack} must be in [0, 1) (the factor sigma shrinks by; 0: off)")
    if s.mirrored and (s.popsize % 2 or s.popsize < 4):
        problems.append(f"search.mirrored=true needs an even search.popsize of at least 4, got {s.popsize}")
    if s.strategy not in STRATEGIES:
        problems.append(f"search.strategy={s.strategy!r}: choose one of {', '.join(sorted(STRATEGIES))}")
    elif s.strategy == "es":
        if s.popsize % 2:
            problems.append(f"search.strategy=es scores candidates in pairs: search.popsize={s.popsize} must be even")
        if not s.mean_lr > 0:
            problems.append(f"search.mean_lr={s.mean_lr} must be positive")
    elif not 0 < s.mean_lr <= 1:
        problems.append(f"search.mean_lr={s.mean_lr} must be in (0, 1] for CMA-ES")
    if s.fitness not in FITNESS_MODES:
        problems.append(f"search.fitness={s.fitness!r}: choose one of {', '.join(FITNESS_MODES)}")
    if not s.calibration_snr >= 0:
        problems.append(f"search.calibration_snr={s.calibration_snr} must be >= 0")
    if s.generations < 1:
        problems.append(f"search.generations={s.generations} (--generations) must be >= 1")
    if not (math.isfinite(s.max_minutes) and s.max_minutes >= 0):
        problems.append(f"search.max_minutes={s.max_minutes} (--max-minutes) must be >= 0 (0: no time limit)")
    if r.wandb_project is not None and importlib.util.find_spec("wandb") is None:
        problems.append(
            f"run.wandb_project={r.wandb_project!r} needs the wandb package: pip install wandb "
            "(or drop run.wandb_project; TensorBoard logs are written either way)"
        )
    if r.forgetting_task is not None and r.forgetting_task not in FORGETTING_TASKS:
        problems.append(f"run.forgetting_task={r.forgetting_task!r}: choose one of {', '.join(FORGETTING_TASKS)}")
    if r.forgetting_size < 2:
        problems.append(f"run.forgetting_size={r.forgetting_size} must be >= 2 (a paired interval needs two prompts)")
    if r.keep_checkpoints < 0:
        problems.append(f"run.keep_checkpoints={r.keep_checkpoints} must be >= 0 (0 keeps every checkpoint)")
    if r.heldout_size < 0:
        problems.append(f"run.heldout_size={r.heldout_size} must be >= 0 (0 skips the held-out comparison)")
    if t.batch_size < 1:
        problems.append(f"task.batch_size={t.batch_size} (--batch-size) must be >= 1")
    if t.val_size < 1:
        problems.append(f"task.val_size={t.val_size} must be >= 1")
    if a.rank < 1:
        problems.append(f"adapter.rank={a.rank} must be >= 1")
    elif a.rank > 512:
        problems.append(f"adapter.rank={a.rank} is above 512, the largest LoRA rank vLLM serves")
    if not 0 < a.alpha_fraction <= 1:
        problems.append(f"adapter.alpha_fraction={a.alpha_fraction} must be in (0, 1]")
    if not a.target_modules:
        problems.append("adapter.target_modules is empty: name the projections to adapt, e.g. [q_proj, v_proj]")
    if t.reward_errors not in ("raise", "zero"):
        problems.append(f"task.reward_errors={t.reward_errors!r}: choose raise or zero")
    if e.mode not in ("auto", "merge", "lora"):
        problems.append(f"engine.mode={e.mode!r}: choose merge, lora or auto")
    if e.lora_kernel not in LORA_KERNELS:
        problems.append(f"engine.lora_kernel={e.lora_kernel!r}: choose {', '.join(LORA_KERNELS)}")
    if cfg.model.dtype not in DTYPES:
        problems.append(f"model.dtype={cfg.model.dtype!r}: choose {', '.join(DTYPES)}")
    q = cfg.model.quantization
    if q not in ("none", "int8", "int4"):
        problems.append(f"model.quantization={q!r}: choose none, int8 or int4")
    elif q != "none" and e.mode == "merge":
        problems.append(
            f"model.quantization={q} with engine.mode=merge: a quantized weight cannot take a merged update; "
            "use engine.mode=lora (or auto, which picks lora for quantized bases)"
        )
    f = cfg.sft
    if f.max_examples is not None and f.max_examples < 1:
        problems.append(f"sft.max_examples={f.max_examples} must be >= 1 (or null for all)")
    if f.epochs < 1 or f.batch_size < 1 or f.samples_per_prompt < 1 or f.max_length < 16:
        problems.append(
            f"sft.epochs={f.epochs}, sft.batch_size={f.batch_size}, sft.samples_per_prompt={f.samples_per_prompt} "
            f"must be >= 1 and sft.max_length={f.max_length} >= 16"
        )
    if f.learning_rate <= 0:
        problems.append(f"sft.learning_rate={f.learning_rate} must be > 0 (2e-4 is a good start)")
    if t.few_shot < 0:
        problems.append(f"task.few_shot={t.few_shot} must be >= 0")
    if e.gpus < 0:
        problems.append(f"engine.gpus={e.gpus} must be >= 0 (0 runs on CPU)")
    if e.workers < 1:
        problems.append(f"engine.workers={e.workers} must be >= 1")
    if e.workers > 1 and e.gpus > 0:
        problems.append(
            f"engine.workers={e.workers} with engine.gpus={e.gpus}: workers counts CPU engines only; with GPUs "
            "the pool starts one engine per GPU. Set engine.workers=1, or engine.gpus=0 for CPU engines"
        )
    tp = e.tensor_parallel_size
    if tp < 1:
        problems.append(f"engine.tensor_parallel_size={tp} must be >= 1")
    elif tp > 1 and (e.gpus == 0 or e.gpus % tp):
        problems.append(
            f"engine.tensor_parallel_size={tp} with engine.gpus={e.gpus}: each engine takes {tp} GPUs, so "
            f"engine.gpus must be a positive multiple of {tp} (tensor parallelism is GPU only)"
        )
    elif tp > 1 and e.mode == "merge":
        problems.append(
            f"engine.tensor_parallel_size={tp} with engine.mode=merge: merging into sharded weights is not built; "
            "use engine.mode=lora (or auto, which picks lora on GPUs)"
        )
    if not e.kv_cache_gib > 0:
        problems.append(
            f"engine.kv_cache_gib={e.kv_cache_gib} must be > 0 (GiB of KV cache per CPU engine; 2 is the default)"
        )
    if not 0 < e.gpu_memory_utilization <= 1:
        problems.append(f"engine.gpu_memory_utilization={e.gpu_memory_utilization} must be in (0, 1] (a fraction)")
    if r.run_dir is not None and not r.run_dir.strip():
        problems.append("run.run_dir (--run-dir) is empty: name a folder, or leave it out for runs/<task>-<time>")
    if e.max_retries < 0:
        problems.append(f"engine.max_retries={e.max_retries} must be >= 0 (0: never retry a failed work item)")
    if e.timeout_s <= 0 or e.start_timeout_s <= 0:
        problems.append(f"engine.timeout_s={e.timeout_s} and engine.start_timeout_s={e.start_timeout_s} must be > 0")
    for key, value in (("run.validate_every", r.validate_every), ("run.checkpoint_every", r.checkpoint_every)):
        if value < 1:
            problems.append(f"{key}={value} must be >= 1 (every how many generations)")
    if t.name not in TASKS:  # before the name is used anywhere (run folder names, caches)
        problems.append(f"unknown task {t.name!r} (--task, task.name): choose one of {', '.join(sorted(TASKS))}")
    g, m = cfg.generation, cfg.model
    if not (math.isfinite(g.temperature) and g.temperature >= 0):
        problems.append(f"generation.temperature={g.temperature} must be a finite number >= 0 (0 is greedy)")
    if m.max_model_len < MIN_MODEL_LEN:
        problems.append(
            f"model.max_model_len={m.max_model_len} must be >= {MIN_MODEL_LEN} tokens (prompt and completion together)"
        )
    if g.max_new_tokens < 1:
        problems.append(f"generation.max_new_tokens={g.max_new_tokens} must be >= 1")
    elif g.max_new_tokens >= m.max_model_len:
        problems.append(
            f"generation.max_new_tokens={g.max_new_tokens} (--max-new-tokens) leaves no room for the prompt in "
            f"model.max_model_len={m.max_model_len}: lower it, or raise model.max_model_len up to the model's context"
        )
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def _unknown_key_message(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or str(exc)
    keys = valid_keys()
    close = difflib.get_close_matches(str(key), keys, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"unknown config key {key!r}.{hint} Valid keys:\n  " + "\n  ".join(keys)
