"""docs/reward-plugins.md stays true: its example plugin scores as the page says, loaded through
essa's own plugin loader by the page's spec, the listing is the file, and every block marked
runnable runs. No engine, no Ray."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from essa.config import load_config
from essa.rewards.plugins import RewardError, SafeReward, load_reward

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reward-plugins.md"
PLUGIN = Path("examples/rewards/short_answer.py")
SPEC = f"{PLUGIN}:score"  # exactly as the page writes it

RUNNABLE = re.compile(r"<!-- runnable -->\n```python\n(.*?)\n```", re.S)
LISTING = re.compile(r"<!-- listing: (\S+) -->\n```python\n(.*?)```", re.S)

GSM8K_EXAMPLE = {
    "question": "Janet's ducks lay 16 eggs per day. She eats three and bakes with four. "
    "She sells the rest for $2 each. How much does she make every day?",
    "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18",
}


@pytest.fixture
def short_answer(monkeypatch):
    monkeypatch.chdir(REPO)  # the page's commands run from the repository root
    return load_reward(SPEC)


def test_the_page_names_the_plugin_by_the_spec_loaded_here():
    text = DOC.read_text(encoding="utf-8")
    assert f"--reward {SPEC}" in text and f'load_reward("{SPEC}")' in text


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("16 - 3 - 4 = 9 eggs are sold.\n9 * 2 = 18 dollars.\n#### 18", 1.0),  # short, right, in form
        ("16 - 3 = 13 eggs.\n13 * 2 = 26.\n#### 26", 0.25),  # well formed, wrong number
        ("She makes 18 dollars. The answer is 18.", 0.0),  # right number, not in the form asked for
        ("#### 18 dollars", 0.0),  # the last line must hold the number alone
        ("#### 18\nThanks!", 0.0),  # ... and be the last non-blank line
        ("#### $18\n\n", 1.0),  # "$" and trailing blank lines are fine
        ("#### 18.0", 1.0),  # numbers compare as numbers
        ("Let me think. " * 30 + "\n#### 18", 50 / 92),  # 92 words: length credit 50/92
        ("Let me think. " * 30 + "\n#### 17", 0.25 * 50 / 92),
        ("", 0.0),
    ],
)
def test_short_answer_scores(short_answer, completion, expected):
    assert short_answer(completion, GSM8K_EXAMPLE) == pytest.approx(expected, abs=1e-12)


def test_short_answer_reference_forms(short_answer):
    assert short_answer("#### 1,000", {"answer": "1000"}) == 1.0  # a JSONL row with a bare number
    assert short_answer("#### 7", {"prompt": "Pick a number."}) == 1.0  # no reference: form and length only
    assert short_answer("no final line", {}) == 0.0


def test_a_reference_that_is_not_a_number_stops_with_the_example_named(short_answer):
    reward = SafeReward(short_answer, SPEC)
    with pytest.raises(RewardError, match=r"failed on train example 3 \(ValueError: the reference answer"):
        reward("#### 7", {"answer": "\\frac{1}{2}"}, "train example 3")
    assert SafeReward(short_answer, SPEC, on_error="zero")("#### 7", {"answer": "\\frac{1}{2}"}, "x") == 0.0


def test_the_cli_spec_resolves_to_the_same_plugin(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config("gsm8k", flags={"task.reward": SPEC})
    assert cfg.task.reward == f"{REPO / PLUGIN}:score"  # absolute, as saved in RUN/config.yaml
    assert load_reward(cfg.task.reward)("#### 18", GSM8K_EXAMPLE) == 1.0


def test_the_listing_on_the_page_is_the_file():
    listings = LISTING.findall(DOC.read_text(encoding="utf-8"))
    assert [path for path, _ in listings] == [str(PLUGIN)]
    for path, code in listings:
        assert code == (REPO / path).read_text(encoding="utf-8")


def test_every_runnable_block_runs(tmp_path, monkeypatch):
    blocks = RUNNABLE.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 5, "the page lost its runnable markers"
    # A fresh folder laid out like the repository root, so that relative paths and files the
    # blocks write behave as they do for a reader there.
    shutil.copytree(REPO / PLUGIN.parent, tmp_path / PLUGIN.parent)  # every example reward the page uses
    monkeypatch.chdir(tmp_path)
    for number, code in enumerate(blocks, start=1):
        namespace = {"__name__": f"reward_plugins_block_{number}"}
        exec(compile(code, f"{DOC.name}, runnable block {number}", "exec"), namespace)
