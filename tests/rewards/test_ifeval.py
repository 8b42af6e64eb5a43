"""Tests for essa.rewards.ifeval and its checkers: every instruction id, strict and loose.

Many cases are those of the official instructions_test.py (google-research
instruction_following_eval), with the expected values it asserts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from essa.rewards import ifeval
from essa.rewards.data import DataError
from essa.rewards.ifeval_checkers import CHECKERS, build_checker

DATA_DIR = Path(os.environ.get("ESSA_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
IFEVAL_FILE = DATA_DIR / "ifeval" / "input_data.jsonl"
needs_data = pytest.mark.skipif(not IFEVAL_FILE.is_file(), reason="IFEval data not found")

BULLETS_STAR = """
  A Markdown bullet point is a way of formatting text to create a list. To
  create a bullet point, start each line with an asterisk (*). For example:
  * This is a bullet point.
  *(no space required)Another bullet point.
  * (no newline ending required)Another bullet point.
  markdown bullet points are often used to create to-do lists or to list items
  in a step-by-step guide."""
BULLETS_DASH = """
  Here are three markdown bullets:
  - I am a large language model, also known as a conversational AI.
  - I am trained on a massive amount of text data, and I am able to communicate.
  -I am still under development, but I am learning new things every day."""
HIGHLIGHTS = """
  There is allowed to be *two different* highlighted *sections in the same*
  line. **This is also true** for **double markdown highlights.**
  """
PARIS = """
  Paris is a city of beauty and romance. The romantic river Seine winds its way
  through the city, past iconic landmarks like the Eiffel Tower and the Louvre
  Museum, where the Mona Lisa resides."""
NAZIS = """
  The Nazis came to power in 1933 through a combination of legal and illegal
  means. By 1934, Hitler had become dictator of Germany.
  """
FIRST_WORD_OK = """
  paragraph 1

  I paragraph 2

  paragraph 3"""
FIRST_WORD_QUOTED = """
  Wow this is a very long response.

  I can't believe there is more than three paragraphs.

  "Really?! more than three? No way!"

  I can't believe it but I guess I am living proof.

  Haha, you go that right."""
PARAGRAPHS = """
          ***
  paragraph 1
          ***
      paragraph 2
          ***
      paragraph 3"""
SECTIONS = """SECTION 1
  [content of section 1]
  SECTION 2
  [content of section 2]"""
POSTSCRIPT = """
  Sure, here is my response with a postscript starting with P.P.S.:

  My response is: I hope this answers your question.

  P.P.S. I am always happy to answer any other questions you may have."""

LT, AL = "less than", "at least"

# (response, instruction id, kwargs, expected strict, expected loose)
CASES = [
    # keywords:existence
    (PARIS, "keywords:existence", {"keywords": ["romantic", "river", "Mona Lisa"]}, True, True),
    ("Paris is a city of romance.", "keywords:existence", {"keywords": ["romantic", "river"]}, False, False),
    # keywords:frequency (the keyword is stripped; matching ignores case)
    (
        "keyword, Keyword, KEYWORD",
        "keywords:frequency",
        {"keyword": "  keyword ", "frequency": 4, "relation": LT},
        True,
        True,
    ),
    (
        "keyword, Keyword, KEYWORD",
        "keywords:frequency",
        {"keyword": "keyword", "frequency": 3, "relation": AL},
        True,
        True,
    ),
    (
        "*keyword\n*Keyword\n*KEYWORD",
        "keywords:frequency",
        {"keyword": "KEYWORD", "frequency": 4, "relation": AL},
        False,
        False,
    ),
    (
        "Sure! Here it is.\nMy answer is brief.",
        "keywords:frequency",
        {"keyword": "sure", "frequency": 1, "relation": LT},
        False,
        True,
    ),
    # keywords:forbidden_words (whole words only)
    (NAZIS, "keywords:forbidden_words", {"forbidden_words": ["HOUSE", "POWER", "BECOME"]}, False, False),
    (
        "Powerful engines became louder.",
        "keywords:forbidden_words",
        {"forbidden_words": ["power", "become"]},
        True,
        True,
    ),
    (
        "Sure, I will avoid that word.\nThe cat sat.",
        "keywords:forbidden_words",
        {"forbidden_words": ["word"]},
        False,
        True,
    ),
    # keywords:letter_frequency
    (
        "There is the T. Four T's.",
        "keywords:letter_frequency",
        {"letter": "T", "let_frequency": 4, "let_relation": AL},
        True,
        True,
    ),
    ("asdfghjkl!!aA", "keywords:letter_frequency", {"letter": "a", "let_frequency": 4, "let_relation": LT}, True, True),
    (
        "asdfghjkl!!aA",
        "keywords:letter_frequency",
        {"letter": "p", "let_frequency": 4, "let_relation": AL},
        False,
        False,
    ),
    (
        "#one #two #three",
        "keywords:letter_frequency",
        {"letter": "#", "let_frequency": 4, "let_relation": AL},
        False,
        False,
    ),
    (
        "**bold** words",
        "keywords:letter_frequency",
        {"letter": "*", "let_frequency": 1, "let_relation": LT},
        False,
        True,
    ),
    # language:response_language (undetectable text counts as followed)
    ("The response is English", "language:response_language", {"language": "en"}, True, True),
    ("Desayunamos en McDonald's hoy", "language:response_language", {"language": "es"}, True, True),
    (
        "This is plainly an English sentence about the weather today.",
        "language:response_language",
        {"language": "fr"},
        False,
        False,
    ),
    ("12345 67890", "language:response_language", {"language": "fr"}, True, True),
    # length_constraints:number_sentences (Punkt)
    (
        "xx,x. xx,x! xx/x. x{x}x?",
        "length_constraints:number_sentences",
        {"num_sentences": 4, "relation": LT},
        False,
        False,
    ),
    (
        "xxxx. xx,x! xxxx. x(x)x?",
        "length_constraints:number_sentences",
        {"num_sentences": 5, "relation": LT},
        True,
        True,
    ),
    (
        "xxxx. xx,x! xx|x. x&x x?",
        "length_constraints:number_sentences",
        {"num_sentences": 4, "relation": AL},
        True,
        True,
    ),
    (
        "xx-x. xx,x! xx}x. x,xx?",
        "length_constraints:number_sentences",
        {"num_sentences": 5, "relation": AL},
        False,
        False,
    ),
    (
        "Dr. Smith went home. He was tired.",
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": LT},
        True,
        True,
    ),
    ("Sure.\nOne. Two.", "length_constraints:number_sentences", {"num_sentences": 3, "relation": LT}, False, True),
    # length_constraints:number_paragraphs (separated by ***)
    (PARAGRAPHS, "length_constraints:number_paragraphs", {"num_paragraphs": 3}, True, True),
    ("p1\n***\n***\np2", "length_constraints:number_paragraphs", {"num_paragraphs": 2}, False, False),
    ("p1\n***\np2\n***\n***", "length_constraints:number_paragraphs", {"num_paragraphs": 2}, False, True),
    ("Here you go:\n***\nA\n***\nB", "length_constraints:number_paragraphs", {"num_paragraphs": 2}, False, True),
    # length_constraints:number_words (\w+ runs)
    (
        "d3sCRi7 lArge lAnguagE M0del w1tH 20 w0RdS.",
        "length_constraints:number_words",
        {"num_words": 8, "relation": LT},
        True,
        True,
    ),
    ("one two three-four five", "length_constraints:number_words", {"num_words": 6, "relation": AL}, False, False),
    (
        "Sure, here is a short answer for you today:\nYes indeed.",
        "length_constraints:number_words",
        {"num_words": 5, "relation": LT},
        False,
        True,
    ),
    # length_constraints:nth_paragraph_first_word (paragraphs split by a blank line)
    (
        FIRST_WORD_OK,
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "I"},
        True,
        True,
    ),
    (
        FIRST_WORD_QUOTED,
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 5, "nth_paragraph": 3, "first_word": "Really"},
        True,
        True,
    ),
    (
        "paragraph 1\n\nI paragraph 2",
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "I"},
        False,
        False,
    ),
    (
        "Sure!\n\nhello world\n\nbye",
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "hello"},
        False,
        True,
    ),
    (
        "**Hello** world",
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "hello"},
        False,
        True,
    ),
    # detectable_content:number_placeholders
    (
        "Dear [name], your [item] ships to [address].",
        "detectable_content:number_placeholders",
        {"num_placeholders": 3},
        True,
        True,
    ),
    (
        "My [adjective] [noun] is [adjective] [noun]. I [verb] and [verb].",
        "detectable_content:number_placeholders",
        {"num_placeholders": 7},
        False,
        False,
    ),
    # detectable_content:postscript
    (POSTSCRIPT, "detectable_content:postscript", {"postscript_marker": "P.P.S"}, True, True),
    (
        "Sure.\n  P. S. Sometimes there are spaces.",
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        True,
        True,
    ),
    (
        "I will do my best.\n\nP.S. I hope this helps.",
        "detectable_content:postscript",
        {"postscript_marker": "PS:"},
        False,
        False,
    ),
    # detectable_format:number_bullet_lists (lines starting with "* " or "-")
    (BULLETS_STAR, "detectable_format:number_bullet_lists", {"num_bullets": 3}, True, True),
    (BULLETS_DASH, "detectable_format:number_bullet_lists", {"num_bullets": 3}, True, True),
    (BULLETS_DASH, "detectable_format:number_bullet_lists", {"num_bullets": 2}, False, True),
    ("* a\n* b\n* c\n* d", "detectable_format:number_bullet_lists", {"num_bullets": 1}, False, False),
    # detectable_format:constrained_response
    ("\n My answer is no.\n", "detectable_format:constrained_response", {}, True, True),
    ("My answer is probably yes.", "detectable_format:constrained_response", {}, False, False),
    # detectable_format:number_highlighted_sections ("**x**" counts once, "*x*" once)
    (HIGHLIGHTS, "detectable_format:number_highlighted_sections", {"num_highlights": 4}, True, True),
    (
        "*Finite difference methods\n*Finite element methods*\n*Monte Carlo",
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        False,
        False,
    ),
    # detectable_format:multiple_sections
    (SECTIONS, "detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2}, True, True),
    (
        "Section 1\nintro\nSection 2\nbody",
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 3},
        False,
        False,
    ),
    # detectable_format:json_format
    ('```json\n{"a": [1, 2]}\n```', "detectable_format:json_format", {}, True, True),
    ('Sure, here it is:\n```json\n{"a": 1}\n```', "detectable_format:json_format", {}, False, True),
    ("{'a': 1}", "detectable_format:json_format", {}, False, False),
    # detectable_format:title
    ("  <<Song of Joy>>\n  La la la. Happy song.", "detectable_format:title", {}, True, True),
    ("  << >>\n  There is no title.", "detectable_format:title", {}, False, False),
    ("  <<This is not a title.\n  This is a paragraph.>>", "detectable_format:title", {}, False, False),
    # combination:two_responses
    ("This is response 1.\n******\nThis is response 2.", "combination:two_responses", {}, True, True),
    ("This is response 1.\n******\nThis is response 1.", "combination:two_responses", {}, False, False),
    ("******\nResponse 1.\n******\n******\nResponse 2.\n******", "combination:two_responses", {}, False, False),
    ("Sure, two answers:\nA\n******\nB", "combination:two_responses", {}, True, True),
    # combination:repeat_prompt (case-insensitive prefix)
    (
        "write a cl description. Hi, Le and TJ.",
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a CL description."},
        True,
        True,
    ),
    (
        "Hi, Le and TJ. Write a CL description. Thanks.\n  ",
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a CL description."},
        False,
        False,
    ),
    (
        "Sure!\nWrite a CL description. Here it is.",
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a CL description."},
        False,
        True,
    ),
    # startend:end_checker
    (
        "\n  The answer is 7. Any more questions?\n  ",
        "startend:end_checker",
        {"end_phrase": "\n  Any more questions?\n  "},
        True,
        True,
    ),
    ('"He said: this is the END."', "startend:end_checker", {"end_phrase": "This is the end."}, True, True),
    ("This will fail. Paris is cool.", "startend:end_checker", {"end_phrase": "This will fail."}, False, False),
    (
        "The end is here. Any more questions?\nHope this helps!",
        "startend:end_checker",
        {"end_phrase": "Any more questions?"},
        False,
        True,
    ),
    # change_case:capital_word_frequency (NLTK word tokens; "I'M GONNA" is I 'M GON NA)
    (
        "HERE there are THREE FUlly CAPITAL words.",
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": AL},
        True,
        True,
    ),
    (
        "THERE are Four FULLY CAPITAL WORDS. Many Others Are Only Partially So.",
        "change_case:capital_word_frequency",
        {"capital_frequency": 4, "capital_relation": LT},
        False,
        False,
    ),
    (
        "I'M GONNA WIN.",
        "change_case:capital_word_frequency",
        {"capital_frequency": 5, "capital_relation": AL},
        True,
        True,
    ),
    (
        "I'M GONNA WIN.",
        "change_case:capital_word_frequency",
        {"capital_frequency": 5, "capital_relation": LT},
        False,
        False,
    ),
    (
        "SURE THING\nonly lowercase here",
        "change_case:capital_word_frequency",
        {"capital_frequency": 1, "capital_relation": LT},
        False,
        True,
    ),
    # change_case:english_capital
    (
        "THIS IS AN ENGLISH SENTENCE. EVERY LETTER IS CAPITALIZED!!! AMAZING.",
        "change_case:english_capital",
        {},
        True,
        True,
    ),
    ("Every Word Is Capitalized.", "change_case:english_capital", {}, False, False),
    (
        "Sure, here it is:\nTHIS IS AN ENGLISH SENTENCE WRITTEN IN CAPITAL LETTERS.",
        "change_case:english_capital",
        {},
        False,
        True,
    ),
    # change_case:english_lowercase
    ("every letter is lowercase.", "change_case:english_lowercase", {}, True, True),
    ("Almost every letter is lowercase.", "change_case:english_lowercase", {}, False, False),
    (
        "Sure!\nthis reply is written in english and in lowercase letters only.",
        "change_case:english_lowercase",
        {},
        False,
        True,
    ),
    # punctuation:no_comma
    ("Every sentence is short. There is no need for a comma.", "punctuation:no_comma", {}, True, True),
    ("Since the start of time, people punctuate.\nYes, always.", "punctuation:no_comma", {}, False, False),
    ("Sure, here it is:\nNo commas here.", "punctuation:no_comma", {}, False, True),
    # startend:quotation
    ('\n  "This entire message is wrapped in double quotation marks."\n  ', "startend:quotation", {}, True, True),
    (
        '"This message is wrapped in double quotation marks." But not everything.',
        "startend:quotation",
        {},
        False,
        False,
    ),
    ('*"Quoted, with markdown emphasis around it."*', "startend:quotation", {}, False, True),
]


def _example(instruction_id: str, kwargs: dict, key: int = 1) -> dict:
    return {"key": key, "prompt": "p", "instruction_id_list": [instruction_id], "kwargs": [kwargs]}


@pytest.mark.parametrize(("response", "instruction_id", "kwargs", "strict", "loose"), CASES)
def test_checker_table(response, instruction_id, kwargs, strict, loose):
    result = ifeval.follow_instructions(response, _example(instruction_id, kwargs))
    assert result == {"strict": [strict], "loose": [loose]}


def test_table_covers_every_id_both_ways():
    outcomes = {i: set() for i in CHECKERS}
    for _, instruction_id, _, strict, _ in CASES:
        outcomes[instruction_id].add(strict)
    assert len(CHECKERS) == 25
    assert {i: o for i, o in outcomes.items() if o != {True, False}} == {}


def test_loose_variants_are_the_official_eight_in_order():
    assert ifeval.loose_variants("a\n*b*\nc") == [
        "a\n*b*\nc", "a\nb\nc", "*b*\nc", "a\n*b*", "*b*", "b\nc", "a\nb", "b",
    ]  # fmt: skip


def test_empty_response_follows_nothing():
    example = _example("punctuation:no_comma", {})
    assert ifeval.follow_instructions("  \n ", example) == {"strict": [False], "loose": [False]}


def test_scores_and_messages():
    example = {
        "key": 7,
        "prompt": "Write a poem.",
        "instruction_id_list": ["punctuation:no_comma", "startend:quotation", "change_case:english_lowercase"],
        "kwargs": [{}, {}, {}],
    }
    response = 'Here it is:\n"roses are red and violets are blue"'
    assert ifeval.score(response, example) == pytest.approx(1 / 3)  # no comma only
    assert ifeval.score_loose(response, example) == 1.0
    assert ifeval.score_all_strict(response, example) == 0.0
    assert ifeval.score('"roses are red and violets are blue"', example) == 1.0
    assert ifeval.score_all_strict('"roses are red and violets are blue"', example) == 1.0
    assert ifeval.messages(example, "") == [{"role": "user", "content": "Write a poem."}]
    assert ifeval.messages(example, "Be brief.")[0] == {"role": "system", "content": "Be brief."}
    assert ifeval.SYSTEM_PROMPT == "" and ifeval.HUB_ID == "google/IFEval"


def test_metrics_hand_computed():
    examples = [
        {
            "key": 1,
            "prompt": "a",
            "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
            "kwargs": [{}, {}],
        },
        {"key": 2, "prompt": "b", "instruction_id_list": ["detectable_format:title"], "kwargs": [{}]},
        {"key": 3, "prompt": "c", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    ]
    responses = [
        'Sure:\n"no commas here"',  # strict: [T, F], loose: [T, T]
        "<<A Title>> and text",  # strict: [T], loose: [T]
        "one, two",  # strict: [F], loose: [F]
    ]
    assert ifeval.metrics(responses, examples) == {
        "prompt_level_strict_acc": pytest.approx(1 / 3),
        "inst_level_strict_acc": pytest.approx(2 / 4),
        "prompt_level_loose_acc": pytest.approx(2 / 3),
        "inst_level_loose_acc": pytest.approx(3 / 4),
    }
    with pytest.raises(ValueError, match="one response per example"):
        ifeval.metrics(responses[:2], examples)


def test_unknown_id_lists_known_ids():
    with pytest.raises(
        ValueError, match=r"unknown IFEval instruction id 'detectable_format:rephrase'.*punctuation:no_comma"
    ):
        build_checker("detectable_format:rephrase", {})


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "message"),
    [
        ("length_constraints:number_words", {"relation": "at least"}, "'num_words' is missing"),
        ("length_constraints:number_words", {"relation": "at least", "num_words": None}, "'num_words' is missing"),
        ("length_constraints:number_words", {"relation": "more than", "num_words": 3}, "must be one of"),
        ("keywords:frequency", {"keyword": "x", "frequency": 2}, "'relation' is missing"),
        ("keywords:existence", {"keywords": []}, "'keywords' is empty"),
        (
            "keywords:letter_frequency",
            {"letter": "ab", "let_frequency": 1, "let_relation": "at least"},
            "single non-whitespace",
        ),
        ("detectable_format:number_highlighted_sections", {"num_highlights": -1}, "is negative"),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"},
            "outside",
        ),
        ("language:response_language", {}, "'language' is missing"),
        ("language:response_language", {"language": "xx"}, "unknown language"),
        ("startend:end_checker", {}, "'end_phrase' is missing"),
        ("punctuation:no_comma", {"num_words": 3}, "unexpected"),
    ],
)
def test_bad_arguments_raise_naming_id_and_argument(instruction_id, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        build_checker(instruction_id, kwargs)
    assert instruction_id in str(info.value)


def test_none_valued_kwargs_are_dropped():
    kwargs = {"num_highlights": 1, "keywords": None, "relation": None}  # as on the Hub
    assert build_checker("detectable_format:number_highlighted_sections", kwargs)("a *b* c")


@needs_data
def test_real_data_splits_and_checkers_are_deterministic():
    splits = ifeval.load_splits(DATA_DIR)
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 241, "validation": 100, "test": 200}
    keys = [{row["key"] for row in rows} for rows in splits.values()]
    assert sum(map(len, keys)) == 541 and len(set.union(*keys)) == 541
    rows = [row for part in splits.values() for row in part]
    assert {i for row in rows for i in row["instruction_id_list"]} == set(CHECKERS)
    response = "Sure, here it is:\n*HELLO* world. P.S. Bye [x]\n\nSECTION 1 " + "Ceci est en français. " * 3
    first = [ifeval.follow_instructions(response, row) for row in rows]
    assert [ifeval.follow_instructions(response, row) for row in rows] == first
    assert ifeval.load_splits(DATA_DIR)["train"] == splits["train"]


@needs_data
def test_hub_rows_with_null_kwargs_load_like_the_file(monkeypatch):
    rows = [json.loads(line) for line in IFEVAL_FILE.read_text(encoding="utf-8").splitlines()]
    all_args = {k for row in rows for kw in row["kwargs"] for k in kw}
    hub_rows = [dict(row, kwargs=[{k: kw.get(k) for k in all_args} for kw in row["kwargs"]]) for row in rows]
    monkeypatch.setattr("essa.rewards.ifeval.load_hub_split", lambda hub_id, config, split: hub_rows)
    from_hub, from_file = ifeval.load_splits(None), ifeval.load_splits(DATA_DIR)
    assert [r["key"] for r in from_hub["test"]] == [r["key"] for r in from_file["test"]]
    row = from_hub["test"][0]
    assert ifeval.follow_instructions("A reply.", row) == ifeval.follow_instructions("A reply.", from_file["test"][0])


def test_mismatched_lengths_are_a_data_error_naming_the_key(tmp_path):
    (tmp_path / "ifeval").mkdir()
    row = {"key": 4242, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}
    (tmp_path / "ifeval" / "input_data.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="4242"):
        ifeval.load_splits(tmp_path)


_OFFLINE_SCRIPT = """
import socket

def refuse(*args, **kwargs):
    raise AssertionError("network access attempted")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

from essa.rewards import ifeval, ifeval_text

assert ifeval_text.count_sentences("Dr. Smith went home. He was tired.") == 2
assert ifeval_text.word_tokenize("I'M HERE.") == ["I", "'M", "HERE", "."]
assert ifeval_text.detect_language("Ceci est une phrase écrite en français, sans aucun doute.") == "fr"
example = {"key": 1, "prompt": "p", "kwargs": [{"num_sentences": 2, "relation": "at least"}, {}],
           "instruction_id_list": ["length_constraints:number_sentences", "change_case:english_lowercase"]}
assert ifeval.follow_instructions("One. Two.", example)["strict"] == [True, False]
print("offline ok")
"""


def test_no_network_or_download():
    # A fresh interpreter, so that the Punkt model and the langdetect profiles are loaded for
    # the first time with the network refused.
    result = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "offline ok" in result.stdout


def test_eval_fields_aggregate_to_the_four_standard_numbers():
    from essa.rewards.ifeval import aggregate, eval_fields, metrics

    examples = [
        {
            "key": 1,
            "prompt": "p",
            "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
            "kwargs": [{}, {}],
        },
        {"key": 2, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    ]
    responses = ["all lowercase, with a comma", "No comma here"]
    per_example = [eval_fields(r, e) for r, e in zip(responses, examples)]
    fields = {key: [f[key] for f in per_example] for key in per_example[0]}
    # example 1: lowercase yes, no_comma no; example 2: no_comma yes -> 2 of 3 instructions, 1 of 2 prompts
    assert (
        aggregate(fields)
        == metrics(responses, examples)
        == {
            "prompt_level_strict_acc": 0.5,
            "inst_level_strict_acc": 2 / 3,
            "prompt_level_loose_acc": 0.5,
            "inst_level_loose_acc": 2 / 3,
        }
    )
