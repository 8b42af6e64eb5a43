"""Tests for essa.rewards.countdown: the safe equation reward, the generator, and the task."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections import Counter
from fractions import Fraction

import pytest

from essa.config import TaskConfig, load_config, packaged_config
from essa.model import sft
from essa.rewards import countdown
from essa.rewards.countdown import FORMAT_SCORE, evaluate_equation, extract_equation, score
from essa.rewards.task import TASKS, load_task

EXAMPLE = {"nums": [19, 36, 55, 7], "target": 65, "solution": "55 + 36 - 19 - 7"}
TEN = {"nums": [1, 2, 3, 4], "target": 10, "solution": "1 + 2 + 3 + 4"}
SIZES = {"test": 500, "validation": 500, "train": 2000, "sft": 2000}


def tagged(equation: str) -> str:
    return f"Let me think.\n<answer> {equation} </answer>"


# ---- the reward -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "example", "expected"),
    [
        # correct
        (tagged("55 + 36 - 19 - 7"), EXAMPLE, 1.0),
        ("<answer>55+36-19-7</answer>", EXAMPLE, 1.0),
        ("<answer>\n(55 + 36) - (19 + 7)\n</answer>", EXAMPLE, 1.0),
        (tagged("1 + 2 + 3 + 4"), TEN, 1.0),
        (tagged("4 * 3 - 2 * 1"), TEN, 1.0),
        (tagged("1 / 49 * 49"), {"nums": [1, 49, 49], "target": 1}, 1.0),  # exact: float gives 0.999...
        # "= target" suffix
        (tagged("55 + 36 - 19 - 7 = 65"), EXAMPLE, 1.0),
        (tagged("(55 + 36) - (19 + 7)=65"), EXAMPLE, 1.0),
        (tagged("55 + 36 - 19 - 7 = 64"), EXAMPLE, FORMAT_SCORE),  # states a false equation
        (tagged("= 65"), EXAMPLE, 0.0),
        (tagged("65 = 55 + 36 - 19 - 7"), EXAMPLE, 0.0),  # only the suffix form is read
        (tagged("55 + 36 = 19 + 72"), EXAMPLE, 0.0),
        # wrong value
        (tagged("55 + 36 - 19 + 7"), EXAMPLE, FORMAT_SCORE),
        (tagged("(1 + 2) / 3"), EXAMPLE, FORMAT_SCORE),  # the prompt's own example
        # wrong numbers, right value
        (tagged("36 - (55 - 7 * (19 - 7))"), EXAMPLE, FORMAT_SCORE),  # 7 used twice
        (tagged("2 * 3 + 4"), TEN, FORMAT_SCORE),  # 1 missing
        (tagged("(55 + 36 - 19 - 7) * 1"), EXAMPLE, FORMAT_SCORE),  # an extra number
        (tagged("(1 + 2 + 3 + 4) * 1"), TEN, FORMAT_SCORE),
        (tagged("7 + 55 - 19 + 36 - 14"), EXAMPLE, FORMAT_SCORE),  # 14 is not given
        # division by zero: well formed, no value
        (tagged("5 / (3 - 3)"), {"nums": [3, 3, 5], "target": 1}, FORMAT_SCORE),
        (tagged("55 / (36 - 36) + 19 - 7"), EXAMPLE, FORMAT_SCORE),
        # unary minus is allowed, unary plus is not
        (tagged("-19 + 55 + 36 - 7"), EXAMPLE, 1.0),
        (tagged("-(19 - 55) + 36 - 7"), EXAMPLE, 1.0),
        (tagged("+55 + 36 - 19 - 7"), EXAMPLE, 0.0),
        # malformed
        (tagged(""), EXAMPLE, 0.0),
        ("<answer></answer>", EXAMPLE, 0.0),
        (tagged("55 + + "), EXAMPLE, 0.0),
        (tagged("55 36 19 7"), EXAMPLE, 0.0),
        (tagged("(55 + 36 - 19 - 7"), EXAMPLE, 0.0),
        (tagged("sixty-five"), EXAMPLE, 0.0),
        (tagged("55.0 + 36 - 19 - 7"), EXAMPLE, 0.0),  # integers only
        (tagged("055 + 36 - 19 - 7"), EXAMPLE, 0.0),
        (tagged("0x37 + 36 - 19 - 7"), EXAMPLE, 0.0),
        (tagged("5_5 + 36 - 19 - 7"), EXAMPLE, 0.0),
        (tagged("55 + 36 − 19 − 7"), EXAMPLE, 0.0),  # Unicode minus
        (tagged("55 (36) - 19 - 7"), EXAMPLE, 0.0),  # a call
        (tagged("[55, 36, 19, 7]"), EXAMPLE, 0.0),
        ("<answer> 55 + 36 - 19 - 7", EXAMPLE, 0.0),  # unclosed tag
        ("<ANSWER> 55 + 36 - 19 - 7 </ANSWER>", EXAMPLE, 0.0),  # tags are case-sensitive
        # no tags
        ("55 + 36 - 19 - 7 = 65", EXAMPLE, 0.0),
        ("", EXAMPLE, 0.0),
        ("\\boxed{55 + 36 - 19 - 7}", EXAMPLE, 0.0),
        # several tags: the last counts
        (tagged("1 + 2") + "\nNo wait.\n" + tagged("55 + 36 - 19 - 7"), EXAMPLE, 1.0),
        (tagged("55 + 36 - 19 - 7") + "\nNo wait.\n" + tagged("1 + 2"), EXAMPLE, FORMAT_SCORE),
        (tagged("55 + 36 - 19 - 7") + "\n" + tagged("no idea"), EXAMPLE, 0.0),
        # operators outside + - * /
        (tagged("9**9**9"), EXAMPLE, 0.0),
        (tagged("9 ** 9 ** 9 ** 9"), EXAMPLE, 0.0),
        (tagged("55 // 1 + 36 - 19 - 7"), EXAMPLE, 0.0),
        (tagged("55 % 56 + 36 - 19 - 7"), EXAMPLE, 0.0),
        (tagged("55 << 0"), EXAMPLE, 0.0),
        (tagged("~55"), EXAMPLE, 0.0),
        (tagged("55 + 36 - 19 - 7 == 65"), EXAMPLE, 0.0),
        # too long, too deep
        (tagged(" + ".join(["1"] * 60)), {"nums": [1] * 60, "target": 60}, 0.0),
        (tagged("55 +" + " " * 100 + "36 - 19 - 7"), EXAMPLE, 0.0),
        (tagged("9" * 101), EXAMPLE, 0.0),
        (tagged("- " * 14 + "55 + 36 - 19 - 7"), EXAMPLE, 0.0),
        (tagged("- " * 2 + "55 + 36 - 19 - 7"), EXAMPLE, 1.0),
        (tagged("1 - (" * 13 + "1" + ")" * 13), {"nums": [1] * 14, "target": 1}, 0.0),
        (tagged("(" * 30 + "55 + 36 - 19 - 7" + ")" * 30), EXAMPLE, 1.0),  # brackets add no depth
    ],
)
def test_score(completion: str, example: dict, expected: float) -> None:
    assert score(completion, example) == expected


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('x')",
        "(1).__class__",
        "(1).__class__.__base__.__subclasses__()",
        "eval('65')",
        "exec('import os')",
        "open('/etc/passwd').read()",
        "lambda: 65",
        "[x for x in (55, 36, 19, 7)]",
        "65 if 1 else 0",
        "globals()",
        "True + 64",
        "'65'",
        "f'{65}'",
        "55 + 36 - 19 - 7; __import__('os').system('x')",
        "55 + 36 - 19 - 7\n__import__('os').system('x')",
    ],
)
def test_code_is_never_executed(monkeypatch, payload: str) -> None:
    calls = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args) or 0)
    assert score(tagged(payload), EXAMPLE) == 0.0
    assert evaluate_equation(payload) is None
    assert calls == []


def test_huge_inputs_are_rejected_quickly() -> None:
    started = time.perf_counter()
    for text in [
        "9**9**9",
        "9" * 101,
        "9*" * 50 + "9",
        "9" * 10_000,
        "(" * 10_000 + "1" + ")" * 10_000,
        "<answer>" * 10_000,
        "<answer> " + "9*" * 10_000 + "9 </answer>",
    ]:
        assert score(tagged(text), EXAMPLE) == 0.0
    assert score(tagged("9" * 100), EXAMPLE) == FORMAT_SCORE  # 100 characters are still read
    assert score("x" * 200_000 + tagged("55 + 36 - 19 - 7"), EXAMPLE) == 1.0
    assert time.perf_counter() - started < 2.0


def test_the_largest_allowed_product_is_exact() -> None:
    value, literals, stated = evaluate_equation(" * ".join(["99999999"] * 9))
    assert value == Fraction(99999999) ** 9 and len(literals) == 9 and stated is None


def test_random_text_never_raises() -> None:
    rng = random.Random(0)
    alphabet = "0123456789+-*/() =.x_<>\n" + "answer"
    for _ in range(3000):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert score(f"<answer>{body}</answer>", EXAMPLE) in (0.0, FORMAT_SCORE, 1.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("55 + 36 - 19 - 7", (Fraction(65), [55, 36, 19, 7], None)),
        (" 7 / 2 = 3 ", (Fraction(7, 2), [7, 2], 3)),
        ("1 / (2 - 2)", (None, [1, 2, 2], None)),
        ("-(3 - 5) * 2", (Fraction(4), [3, 5, 2], None)),
        ("3 ** 2", None),
        ("x + 1", None),
    ],
)
def test_evaluate_equation(text: str, expected) -> None:
    assert evaluate_equation(text) == expected


def test_extract_equation_takes_the_last_tag() -> None:
    assert extract_equation("<answer>1</answer> <answer> 2 + 3 </answer>") == " 2 + 3 "
    assert extract_equation("<answer>\n4\n</answer>") == "\n4\n"
    assert extract_equation("no tags") is None


def test_eval_fields_and_aggregate() -> None:
    responses = [tagged("55 + 36 - 19 - 7"), tagged("1 + 2"), "no answer", tagged("55 + 36 - 19 - 7 = 65")]
    fields = [countdown.eval_fields(r, EXAMPLE) for r in responses]
    assert fields == [
        {"correct": 1.0, "formatted": 1.0},
        {"correct": 0.0, "formatted": 1.0},
        {"correct": 0.0, "formatted": 0.0},
        {"correct": 1.0, "formatted": 1.0},
    ]
    metrics = countdown.aggregate({key: [f[key] for f in fields] for key in fields[0]})
    assert metrics == {"exact_acc": 0.5, "format_acc": 0.75}
    with pytest.raises(ValueError):
        countdown.aggregate({"correct": [], "formatted": []})


@pytest.mark.parametrize(
    ("equation", "expected"),
    [
        ("55 + 36 - 19 - 7", 1.0),  # a solution: the full reward, as score gives it
        ("55 + 36 - 19 - 7 = 65", 1.0),
        ("55 + 36 - 19 + 7", 0.1 + 0.3 + 0.3 * (1 - 14 / 65)),  # right numbers, value 79
        ("55 * 36 * 19 * 7", 0.1 + 0.3),  # right numbers, value far beyond twice the target: no value credit
        ("55 + 36", 0.1 + 0.3 * 2 / 4),  # two of the four numbers
        ("55 + 36 - 19 - 7 - 1", 0.1 + 0.3 * 4 / 5),  # an extra number costs as a missing one would
        ("55 + 55 - 45", 0.1 + 0.3 * 1 / 4),  # 55 given once, used twice: counted once; value 65 earns nothing
        ("65", 0.1),  # the target stated, none of the numbers
        ("55 / (36 - 36) + 19 + 7", 0.1 + 0.3 * 4 / 5),  # one 36 too many, and a division by zero: no value
    ],
)
def test_partial_credit(equation: str, expected: float) -> None:
    assert countdown.partial_credit(tagged(equation), EXAMPLE) == pytest.approx(expected)


def test_partial_credit_ranks_a_solution_above_every_near_miss_and_keeps_score_at_the_ends(splits) -> None:
    assert countdown.partial_credit("no answer here", EXAMPLE) == score("no answer here", EXAMPLE) == 0.0
    assert countdown.partial_credit(tagged("2 ** 3"), EXAMPLE) == 0.0  # malformed, as score says
    rnd = random.Random(0)
    for row in splits["train"][:200]:
        nums = list(row["nums"])
        rnd.shuffle(nums)
        guess = " + ".join(str(n) for n in nums)
        credit, exact = countdown.partial_credit(tagged(guess), row), score(tagged(guess), row)
        assert (credit == 1.0) == (exact == 1.0)
        assert exact == 1.0 or FORMAT_SCORE + 0.3 <= credit <= 0.7


def test_a_reward_plugin_on_a_builtin_task_keeps_the_benchmark_headline() -> None:
    shaped = load_task(TaskConfig(name="countdown", reward="essa.rewards.countdown:partial_credit"))
    assert shaped.score is countdown.partial_credit and shaped.headline == countdown.HEADLINE


# ---- the generator ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    return countdown.load_splits(None)


def key(row: dict) -> tuple:
    return tuple(sorted(row["nums"])), row["target"]


def test_split_sizes_are_fixed(splits) -> None:
    assert {name: len(rows) for name, rows in splits.items()} == SIZES


def test_generation_is_deterministic_and_pinned(splits) -> None:
    countdown.generate.cache_clear()
    started = time.perf_counter()
    again = countdown.load_splits(None)
    assert time.perf_counter() - started < 5.0  # about 0.4 s on one idle core
    assert again == splits
    assert splits["test"][0] == {"nums": [92, 31, 77], "target": 138, "solution": "92 + 77 - 31"}
    assert splits["validation"][0] == {"nums": [66, 30, 30], "target": 66, "solution": "30 - (30 - 66)"}
    assert splits["train"][0] == {"nums": [69, 29, 87], "target": 207, "solution": "69 * 87 / 29"}
    assert splits["sft"][0] == {"nums": [82, 24, 53, 6], "target": 59, "solution": "24 + 6 - (53 - 82)"}
    # Every part, pinned: a change to the generator (or to Python's random()) shows up here.
    digest = hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()
    assert digest == PINNED_DIGEST


PINNED_DIGEST = "93ad858ecade90eb75c257c63228676e929349903680afb5d31ca31558193919"


def test_another_seed_gives_other_problems() -> None:
    assert countdown.generate(50, seed=1) != countdown.generate(50)
    assert countdown.generate(50, seed=1) == countdown.generate(50, seed=1)


def test_earlier_parts_do_not_depend_on_later_sizes() -> None:
    assert countdown.generate(1000) == countdown.generate(5000)[:1000]


def test_parts_are_disjoint_and_free_of_duplicates(splits) -> None:
    keys = [key(row) for rows in splits.values() for row in rows]
    assert len(set(keys)) == len(keys) == sum(SIZES.values())


def test_problems_are_well_formed(splits) -> None:
    rows = [row for part in splits.values() for row in part]
    counts = Counter(len(row["nums"]) for row in rows)
    assert set(counts) == {3, 4} and 0.45 < counts[3] / len(rows) < 0.55
    for row in rows:
        assert all(type(n) is int and 1 <= n <= 99 for n in row["nums"]), row
        assert type(row["target"]) is int and 1 <= row["target"] <= 999, row
        value, literals, stated = evaluate_equation(row["solution"])
        assert value == row["target"] and sorted(literals) == sorted(row["nums"]) and stated is None, row
        assert re.fullmatch(r"[0-9+\-*/() ]+", row["solution"]), row


def test_every_reference_response_earns_full_reward(splits) -> None:
    for part in splits.values():
        for row in part:
            response = countdown.reference_response(row)
            assert response.endswith(f"<answer> {row['solution']} </answer>")
            assert score(response, row) == 1.0, response


def test_reference_response_shows_the_steps() -> None:
    response = countdown.reference_response(
        {"nums": [65, 10, 35, 70], "target": 180, "solution": "70 / (10 / 35) - 65"}
    )
    assert response == ("10 / 35 = 2/7, 70 / (2/7) = 245, 245 - 65 = 180.\n<answer> 70 / (10 / 35) - 65 </answer>")
    assert countdown.reference_response(TEN).startswith("1 + 2 = 3, 3 + 3 = 6, 6 + 4 = 10.\n")
    assert "30 - (-29) = 59" in countdown.reference_response(
        {"nums": [82, 24, 53, 6], "target": 59, "solution": "24 + 6 - (53 - 82)"}
    )
    with pytest.raises(ValueError, match="not an allowed expression"):
        countdown.reference_response({"nums": [2, 3], "target": 6, "solution": "2 ** 3"})
    with pytest.raises(ValueError, match="not an allowed expression"):
        countdown.reference_response({"nums": [2, 3], "target": 6, "solution": "2 + 3"})


# ---- the task ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task():
    return load_task(TaskConfig(name="countdown"))


def test_task_is_registered_and_loads(task, splits) -> None:
    assert TASKS["countdown"] == "essa.rewards.countdown"
    assert task.splits == splits
    assert task.sft_split == "sft" and task.reference_response is countdown.reference_response
    assert task.score is countdown.score and task.reward_name == "countdown (built-in)"
    assert task.eval_fields is countdown.eval_fields and task.aggregate is countdown.aggregate
    for split, size in SIZES.items():
        assert len(task.examples(split)) == size


def test_data_dir_is_ignored(tmp_path, task) -> None:
    assert load_task(TaskConfig(name="countdown", data_dir=str(tmp_path))).splits == task.splits


def test_prompt_states_numbers_target_and_format(task) -> None:
    chat = task.build_messages(EXAMPLE)
    assert [m["role"] for m in chat] == ["system", "user"]
    assert chat[0]["content"] == countdown.SYSTEM_PROMPT and "<answer>" in chat[0]["content"]
    assert chat[1]["content"] == (
        "Using the numbers [19, 36, 55, 7], create an equation that equals 65. You can use basic "
        "arithmetic operations (+, -, *, /) and each number must be used exactly once. Show your work, "
        "then give the final equation in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
    )


@pytest.mark.parametrize(("system_prompt", "roles"), [("Be terse.", ["system", "user"]), ("", ["user"])])
def test_custom_system_prompt(system_prompt, roles) -> None:
    chat = load_task(TaskConfig(name="countdown", system_prompt=system_prompt)).build_messages(EXAMPLE)
    assert [m["role"] for m in chat] == roles
    assert chat[0]["content"] == (system_prompt or countdown.prompt(EXAMPLE))


def test_few_shot_turns_come_from_the_sft_part(task) -> None:
    chat = load_task(TaskConfig(name="countdown", few_shot=2)).build_messages(EXAMPLE)
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert chat[2]["content"] == countdown.reference_response(task.examples("sft")[0])


def test_packaged_config_and_sft_pairs(task) -> None:
    cfg = load_config("countdown")
    assert cfg.task.name == "countdown" and cfg.generation.max_new_tokens == 128
    pairs, source = sft.sft_pairs(cfg, task)
    assert source == "reference" and len(pairs) == cfg.sft.max_examples == 512  # configs/countdown.yaml
    first = task.examples("sft")[0]
    assert pairs[0] == (task.build_messages(first), countdown.reference_response(first))
    assert all(score(response, row) == 1.0 for (_, response), row in zip(pairs, task.examples("sft")))


def test_every_config_key_has_a_comment_above_it() -> None:
    lines = packaged_config("countdown").read_text().splitlines()
    leaf = re.compile(r"^\s+[A-Za-z_]\w*\s*:\s*\S")
    checked = 0
    for i, line in enumerate(lines):
        if leaf.match(line):
            previous = next((p for p in reversed(lines[:i]) if p.strip()), "")
            assert previous.strip().startswith("#"), f"line {i + 1} ({line.strip()!r}) has no comment"
            checked += 1
    assert checked == 15
