"""Tests for essa.rewards.data (JSONL reading with line-numbered errors) and essa.rewards.task (load_task)."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from essa.config import TaskConfig
from essa.rewards.data import DataError, read_jsonl, stable_order
from essa.rewards.task import TASKS
from essa.rewards.task import load_task as _load_task


def load_task(name, data_dir=None, system_prompt=None):
    return _load_task(TaskConfig(name=name, data_dir=data_dir, system_prompt=system_prompt))


# The repo sits at /work/main and shared data at /work/shared/data; parents[3] is /work.
DATA_DIR = Path(os.environ.get("ESSA_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA_DIR / "gsm8k").is_dir(), reason=f"no GSM8K data in {DATA_DIR}")

GOOD = '{"question": "q", "answer": "a"}'
REQUIRED = ("question", "answer")


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_rows_and_skips_blank_lines(tmp_path):
    path = write(tmp_path, [GOOD, "", "   ", '{"question": "q2", "answer": "a2", "extra": 1}'])
    rows = read_jsonl(path, REQUIRED)
    assert rows == [{"question": "q", "answer": "a"}, {"question": "q2", "answer": "a2", "extra": 1}]


@pytest.mark.parametrize(
    ("lines", "line_number", "fragment"),
    [
        (["{not json"], 1, "not valid JSON"),
        ([GOOD, GOOD, '{"question": "q", "answer": '], 3, "not valid JSON"),
        ([GOOD, "", "", '{"question": oops}'], 4, "not valid JSON"),  # blank lines count
        (["", GOOD, "", "", "[1, 2]"], 5, "expected a JSON object, got list"),
        ([GOOD, '"just a string"'], 2, "expected a JSON object, got str"),
        ([GOOD, "null"], 2, "expected a JSON object, got NoneType"),
        ([GOOD, "", '{"question": "q"}'], 3, "missing key(s) ['answer']"),
        (['{"answer": "a"}'], 1, "missing key(s) ['question']"),
        (["{}"], 1, "missing key(s) ['question', 'answer']"),
    ],
    ids=[
        "syntax-first",
        "syntax-third",
        "syntax-after-blanks",
        "list-row",
        "string-row",
        "null-row",
        "missing-answer",
        "missing-question",
        "missing-both",
    ],
)
def test_bad_rows_report_path_and_line(tmp_path, lines, line_number, fragment):
    path = write(tmp_path, lines)
    with pytest.raises(DataError) as info:
        read_jsonl(path, REQUIRED)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_number}: ")
    assert fragment in message


def test_missing_required_key_message_lists_the_needed_keys(tmp_path):
    path = write(tmp_path, ['{"question": "q"}'])
    with pytest.raises(DataError, match=r"each row needs \['question', 'answer'\]"):
        read_jsonl(path, REQUIRED)


def test_missing_file_names_path_and_the_setting(tmp_path):
    path = tmp_path / "gsm8k" / "train.jsonl"
    with pytest.raises(DataError) as info:
        read_jsonl(path, REQUIRED)
    message = str(info.value)
    assert str(path) in message
    assert "ESSA_DATA_DIR" in message and "task.data_dir" in message


@pytest.mark.parametrize("content", ["", "\n\n", "  \n\t\n"], ids=["empty", "newlines", "whitespace"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match="holds no rows") as info:
        read_jsonl(path, REQUIRED)
    assert str(path) in str(info.value)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_stable_order_ignores_input_order():
    rows = [{"question": f"question {i}", "answer": str(i)} for i in range(50)]
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert stable_order(rows, "question") == stable_order(shuffled, "question")
    assert stable_order(rows, "question") != rows  # it really reorders


# ---- load_task on the real GSM8K data ------------------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k():
    if not (DATA_DIR / "gsm8k").is_dir():
        pytest.skip(f"no GSM8K data in {DATA_DIR}")
    return load_task("gsm8k", str(DATA_DIR))


def jsonl_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def key(row):
    return (row["question"], row["answer"])


@needs_data
def test_split_sizes(gsm8k):
    sizes = {split: len(rows) for split, rows in gsm8k.splits.items()}
    assert sizes == {"validation": 500, "train": 2000, "sft": 4973, "test": 1319}


@needs_data
def test_train_derived_splits_partition_train_jsonl(gsm8k):
    parts = [gsm8k.examples(s) for s in ("validation", "train", "sft")]
    keys = [{key(r) for r in part} for part in parts]
    assert [len(k) for k in keys] == [len(p) for p in parts]  # no duplicates inside a split
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    original = jsonl_rows(DATA_DIR / "gsm8k" / "train.jsonl")
    assert sorted(map(key, original)) == sorted(key(r) for part in parts for r in part)
    assert sorted(map(key, jsonl_rows(DATA_DIR / "gsm8k" / "test.jsonl"))) == sorted(map(key, gsm8k.examples("test")))


@needs_data
def test_split_does_not_depend_on_file_order(gsm8k, tmp_path):
    lines = [
        line for line in (DATA_DIR / "gsm8k" / "train.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    random.Random(1).shuffle(lines)
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(DATA_DIR / "gsm8k" / "test.jsonl", tmp_path / "gsm8k" / "test.jsonl")
    shuffled = load_task("gsm8k", str(tmp_path))
    for split in ("validation", "train", "sft", "test"):
        assert shuffled.examples(split) == gsm8k.examples(split), split


@needs_data
def test_data_dir_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("ESSA_DATA_DIR", str(DATA_DIR))
    assert len(load_task("gsm8k").examples("validation")) == 500


def test_missing_data_dir_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match=r"gsm8k/train\.jsonl"):
        load_task("gsm8k", str(tmp_path))


@needs_data
def test_build_messages_system_then_user(gsm8k):
    example = gsm8k.examples("train")[0]
    messages = gsm8k.build_messages(example)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "####" in messages[0]["content"]
    assert messages[1]["content"] == example["question"]


@needs_data
@pytest.mark.parametrize(("system_prompt", "roles"), [("Be terse.", ["system", "user"]), ("", ["user"])])
def test_custom_system_prompt(system_prompt, roles):
    task = load_task("gsm8k", str(DATA_DIR), system_prompt=system_prompt)
    messages = task.build_messages({"question": "What is 2+2?", "answer": "#### 4"})
    assert [m["role"] for m in messages] == roles
    assert messages[0]["content"] == (system_prompt or "What is 2+2?")


@needs_data
def test_task_scores_with_the_gsm8k_reward(gsm8k):
    example = gsm8k.examples("validation")[0]
    reference = example["answer"].rsplit("####", 1)[1].strip()
    assert gsm8k.score(f"so the answer is\n#### {reference}", example) == 1.0
    assert gsm8k.score("#### -123456789", example) == 0.0


@needs_data
def test_unknown_split_lists_the_known_ones(gsm8k):
    with pytest.raises(ValueError, match=r"no split 'dev'.*\['sft', 'test', 'train', 'validation'\]"):
        gsm8k.examples("dev")


@pytest.mark.parametrize("name", ["gsm8", "GSM8K", "ifeval_x", ""])
def test_unknown_task_lists_known_tasks(name):
    with pytest.raises(ValueError) as info:
        load_task(name)
    message = str(info.value)
    assert f"unknown task {name!r}" in message
    for known in TASKS:
        assert known in message


def test_a_math500_file_without_unique_id_is_named_not_a_traceback(tmp_path):
    from essa.rewards.math500 import load_splits

    (tmp_path / "math500").mkdir()
    (tmp_path / "math500" / "test.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"test.jsonl:1: .*unique_id"):
        load_splits(tmp_path)
