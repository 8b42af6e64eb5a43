"""Tests for essa.config: layering, overrides, error messages, YAML round trip, the packaged YAML."""

from __future__ import annotations

import re

import pytest
import yaml

from essa.config import Config, ConfigError, from_yaml_file, load_config, packaged_config, to_yaml, valid_keys


def test_defaults_without_a_task_are_the_dataclass_defaults():
    assert load_config() == Config()


def test_packaged_gsm8k_yaml_loads_and_matches_its_file():
    path = packaged_config("gsm8k")
    assert path is not None and path.is_file()
    cfg = load_config("gsm8k")
    assert isinstance(cfg, Config)
    raw = yaml.safe_load(path.read_text())
    for section, values in raw.items():
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value, f"{section}.{key}"
    assert cfg.task.name == "gsm8k"


def test_an_unknown_task_is_refused_by_the_config_before_its_name_is_used():
    assert packaged_config("no_such_task") is None
    with pytest.raises(
        ConfigError, match=r"unknown task 'no_such_task' \(--task, task.name\): choose one of countdown"
    ):
        load_config("no_such_task")


@pytest.mark.parametrize(
    ("override", "attr", "expected"),
    [
        ("search.popsize=32", ("search", "popsize"), 32),
        ("search.sigma=0.25", ("search", "sigma"), 0.25),
        ("search.sigma=1", ("search", "sigma"), 1.0),
        ("search.sigma=1e-3", ("search", "sigma"), 0.001),
        ("adapter.alpha_fraction=0.5", ("adapter", "alpha_fraction"), 0.5),
        ("adapter.target_modules=[q_proj,v_proj]", ("adapter", "target_modules"), ["q_proj", "v_proj"]),
        ("task.data_dir=/data/x", ("task", "data_dir"), "/data/x"),
        ("task.data_dir=null", ("task", "data_dir"), None),
        ("run.run_dir=null", ("run", "run_dir"), None),
        ("engine.enforce_eager=true", ("engine", "enforce_eager"), True),
        ("engine.timeout_s=60", ("engine", "timeout_s"), 60.0),
        ("search.strategy=cma_sep", ("search", "strategy"), "cma_sep"),
    ],
)
def test_overrides_take_effect_with_correct_types(override, attr, expected):
    cfg = load_config("gsm8k", overrides=[override])
    value = getattr(getattr(cfg, attr[0]), attr[1])
    assert value == expected
    assert type(value) is type(expected)


def test_data_dir_override_then_null_gives_none():
    cfg = load_config("gsm8k", overrides=["task.data_dir=/a", "task.data_dir=null"])
    assert cfg.task.data_dir is None


@pytest.fixture
def layered(tmp_path, monkeypatch):
    """A task YAML that differs from the dataclass defaults, and a --config file over it."""
    task_yaml = tmp_path / "task.yaml"
    task_yaml.write_text("search:\n  popsize: 12\n  sigma: 0.3\n  generations: 5\n  seed: 9\n")
    monkeypatch.setattr("essa.config.packaged_config", lambda task: task_yaml)
    user = tmp_path / "user.yaml"
    user.write_text("search:\n  popsize: 10\n  sigma: 0.1\nengine:\n  gpus: 2\n")
    return user


# Observed: (popsize, sigma, generations, seed, gpus). Defaults are (16, 0.5, 20, 0, 0).
@pytest.mark.parametrize(
    ("use_file", "flags", "overrides", "expected"),
    [
        (False, None, None, (12, 0.3, 5, 9, 0)),  # task yaml over defaults
        (True, None, None, (10, 0.1, 5, 9, 2)),  # --config over task yaml
        (True, {"search.popsize": 20, "engine.gpus": None}, None, (20, 0.1, 5, 9, 2)),  # flags; None ignored
        (True, {"search.popsize": 20}, ["search.popsize=40", "search.sigma=0.9"], (40, 0.9, 5, 9, 2)),
        (False, {"search.generations": 7}, ["engine.gpus=1", "search.seed=3"], (12, 0.3, 7, 3, 1)),
    ],
)
def test_precedence_yaml_file_flags_overrides(layered, use_file, flags, overrides, expected):
    cfg = load_config("gsm8k", layered if use_file else None, flags, overrides)
    s = cfg.search
    assert (s.popsize, s.sigma, s.generations, s.seed, cfg.engine.gpus) == expected


def test_list_flag_is_applied():
    cfg = load_config("gsm8k", flags={"adapter.target_modules": ["q_proj", "o_proj"]})
    assert cfg.adapter.target_modules == ["q_proj", "o_proj"]


@pytest.mark.parametrize(
    ("override", "key", "suggestion"),
    [
        ("search.popsiz=3", "search.popsiz", "search.popsize"),
        ("adapter.alpha_fractoin=0.5", "adapter.alpha_fractoin", "adapter.alpha_fraction"),
        ("engine.gpu=1", "engine.gpu", "engine.gpus"),
    ],
)
def test_unknown_override_key_names_it_and_suggests(override, key, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config("gsm8k", overrides=[override])
    message = str(info.value)
    assert repr(key) in message
    assert f"Did you mean {suggestion}" in message
    for valid in valid_keys():
        assert valid in message


def test_unknown_key_in_config_file_names_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("search:\n  popsze: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config("gsm8k", path)
    message = str(info.value)
    assert "search.popsze" in message
    assert "Did you mean search.popsize" in message
    assert "model.max_model_len" in message and "run.checkpoint_every" in message


def test_unknown_top_level_section_is_an_error():
    with pytest.raises(ConfigError, match="unknown config key 'serch'"):
        load_config("gsm8k", overrides=["serch.popsize=3"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("search.popsize=abc", "search.popsize"),
        ("search.sigma=big", "search.sigma"),
        ("engine.enforce_eager=maybe", "engine.enforce_eager"),
        ("adapter.rank=[1,2]", "adapter.rank"),
    ],
)
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config("gsm8k", overrides=[override])


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("search.popsize=1", "search.popsize=1"),
        ("search.sigma=0", "search.sigma=0"),
        ("search.sigma=-0.1", "search.sigma=-0.1"),
        ("adapter.alpha_fraction=1.5", "adapter.alpha_fraction=1.5"),
        ("adapter.alpha_fraction=0", "adapter.alpha_fraction=0"),
        ("engine.mode=fast", "engine.mode='fast'"),
        ("engine.lora_kernel=triton", "engine.lora_kernel='triton': choose shared, grouped, vllm"),
        ("model.dtype=fp8", "model.dtype='fp8': choose auto, bfloat16, float16, float32"),
        ("engine.gpus=-1", "engine.gpus=-1"),
        ("adapter.rank=0", "adapter.rank=0"),
        ("task.batch_size=0", "task.batch_size=0"),
        ("run.checkpoint_every=0", "run.checkpoint_every=0"),
        ("generation.max_new_tokens=0", "generation.max_new_tokens=0"),
        ("adapter.target_modules=[]", "adapter.target_modules is empty"),
        ("search.mirrored=true", "search.mirrored=true needs an even search.popsize of at least 4, got 3"),
        ("search.strategy=es", "search.strategy=es scores candidates in pairs: search.popsize=3 must be even"),
        ("search.strategy=adam", "search.strategy='adam': choose one of cma_auto, cma_full, cma_sep, es"),
        ("search.fitness=rank", "search.fitness='rank': choose one of mean, prompt_zscore"),
        ("search.mean_lr=1.5", "search.mean_lr=1.5 must be in (0, 1] for CMA-ES"),
    ],
)
def test_cross_field_errors_name_the_value(override, fragment):
    extra = ["search.popsize=3"] if override.startswith(("search.mirrored", "search.strategy=es")) else []
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config("gsm8k", overrides=[override, *extra])


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        load_config("gsm8k", overrides=["search.popsize=1", "engine.gpus=-2"])
    assert "search.popsize=1" in str(info.value) and "engine.gpus=-2" in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nope.yaml"))):
        load_config("gsm8k", tmp_path / "nope.yaml")


@pytest.mark.parametrize("bad", ["search.popsize", "=3", " =3", "popsize 3"])
def test_malformed_override_raises(bad):
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config("gsm8k", overrides=[bad])


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [
            "search.popsize=48",
            "adapter.target_modules=[q_proj,v_proj]",
            "task.data_dir=/x/y",
            "task.system_prompt=Be brief.",
            "engine.ray_address=auto",
            "search.sigma=0.125",
        ],
    ],
)
def test_yaml_round_trip(tmp_path, overrides):
    cfg = load_config("gsm8k", overrides=overrides)
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert from_yaml_file(path) == cfg


@pytest.mark.parametrize("value", ["001", "runs/exp: 1"])
def test_string_flags_are_taken_verbatim(value):
    cfg = load_config("gsm8k", flags={"run.run_dir": value})
    assert cfg.run.run_dir == value


@pytest.mark.parametrize("value", ["001", "runs/exp: 1", "Be brief. #1 rule", "[draft", "true"])
def test_text_overrides_are_taken_verbatim(value):
    cfg = load_config("gsm8k", overrides=[f"run.run_dir={value}", f"task.system_prompt={value}"])
    assert cfg.run.run_dir == value and cfg.task.system_prompt == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Be brief. #### 5"', "Be brief. #### 5"),
        ("'it''s'", "it's"),
        ('"a" and "b"', '"a" and "b"'),
        ('"open', '"open'),
    ],
)
def test_a_quoted_text_override_is_a_yaml_string(value, expected):
    assert load_config("gsm8k", overrides=[f"task.system_prompt={value}"]).task.system_prompt == expected


@pytest.mark.parametrize(
    ("override", "fragment"),
    [("search.popsize=8 # eight", "'#' on as a comment"), ("adapter.target_modules=[q_proj,v_proj", "not valid YAML")],
)
def test_override_yaml_would_misread_is_refused(override, fragment):
    with pytest.raises(ConfigError, match=re.escape(override)) as info:
        load_config("gsm8k", overrides=[override])
    assert fragment in str(info.value)


def test_every_packaged_yaml_key_has_a_comment_above_it():
    """Every leaf `key: value` line has a comment line directly above it (blank lines skipped).

    Section headers (`model:`, `task:`, ...) are not checked: they name the dataclass they fill.
    """
    lines = packaged_config("gsm8k").read_text().splitlines()
    leaf = re.compile(r"^\s+[A-Za-z_]\w*\s*:\s*\S")
    checked = []
    for i, line in enumerate(lines):
        if not leaf.match(line):
            continue
        previous = next((p for p in reversed(lines[:i]) if p.strip()), "")
        assert previous.strip().startswith("#"), f"line {i + 1} ({line.strip()!r}) has no comment above it"
        checked.append(line.split(":")[0].strip())
    assert len(checked) == len(valid_keys())  # every config key appears, and each was checked


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  popsize: [3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line 3, column 1"):
        load_config("gsm8k", bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- search\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config("gsm8k", listed)


def test_a_lora_rank_above_vllms_limit_is_refused_before_anything_starts():
    with pytest.raises(ConfigError, match="adapter.rank=1024 is above 512"):
        load_config("gsm8k", overrides=["adapter.rank=1024"])


def test_the_es_strategy_takes_a_mean_step_above_one():
    cfg = load_config("gsm8k", overrides=["search.strategy=es", "search.mean_lr=2.0", "search.fitness=prompt_zscore"])
    assert (cfg.search.strategy, cfg.search.mean_lr, cfg.search.fitness) == ("es", 2.0, "prompt_zscore")
