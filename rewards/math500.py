"""MATH-500: a binary correctness reward, and essa's own answer extraction and equivalence.

:func:`score` takes math-verify's verdict (rewards/math_verify_grader.py), the grader published
MATH-500 figures use, and this module's own grader where math-verify is wrong or blind (answers in
another base; completions it reads no answer from); see :func:`score`.

In essa's own grader, a completion's answer is the content of its last ``\\boxed{...}`` (or ``\\fbox``); failing
that, what follows the last "answer is" / "Answer:". Answers are compared as in the usual
MATH graders: both sides are normalized (:func:`normalize_answer`, after Hendrycks'
``strip_string`` and Minerva's ``normalize_final_answer``) and compared as strings; if that
fails, :func:`is_equiv` compares structure (matrices, tuples and intervals element-wise,
solution lists in any order) and then values: each scalar is translated from LaTeX into a
sympy expression by a small converter (sympy's own LaTeX parser needs antlr4, which is not
installed) and evaluated numerically at 30 digits, free symbols at fixed sample points.
Numeric evaluation rather than ``simplify`` keeps every check fast and bounded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from essa.rewards.data import chat_messages, load_hub_split, read_jsonl, stable_order, take_splits
from essa.rewards.math_verify_grader import math_verify_equiv

__all__ = ["extract_answer", "is_equiv", "last_boxed", "normalize_answer", "score"]

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_SHORTHAND = re.compile(r"\\(frac|sqrt)(?![A-Za-z])")
_ANSWER_IS = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:)", re.IGNORECASE)
# Trailing units that follow a number: "5 cm", "30 degrees". Single letters ("m") are left
# out because "5 m" may as well be algebra.
_UNITS = (
    r"(?:square\s+)?(?:units?|degrees?|cm|centimeters?|meters?|km|inches|inch|feet|foot|ft|"
    r"miles?|cents?|dollars?|hours?|minutes?|seconds?|days?|mph|pounds?|ways|people)"
)
_VARIABLE = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?|\\[A-Za-z]+")
# LaTeX function -> sympy function (\log is the natural log, as in sympy's LaTeX parser).
_FUNCS = {f: f for f in ("sin", "cos", "tan", "cot", "sec", "csc", "sinh", "cosh", "tanh", "log", "exp")}
_FUNCS.update(arcsin="asin", arccos="acos", arctan="atan", ln="log")
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "theta", "lambda", "mu", "phi", "omega"}
_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\\[A-Za-z]+|[A-Za-z]|\S)")
# a numeral in another base: 4210_5, 2516_{8}
_BASE = re.compile(r"\d_\{?\d+\}?\s*$")
_MAX_LEN = 200  # longer expressions are compared as strings only
_REL_TOL = 1e-9


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (any of ``([{`` / ``)]}``), or -1."""
    depth = 0
    for i in range(start, len(text)):
        depth += (text[i] in "([{") - (text[i] in ")]}")
        if depth == 0:
            return i
    return -1


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces), or None.

    ``\\boxed 5`` (no braces) gives the text up to the next ``$`` or line end. An unclosed
    box (a truncated completion) is skipped in favour of an earlier complete one.
    """
    for m in reversed(list(_BOX.finditer(text))):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j].strip()
        elif i > m.end():
            token = re.split(r"[$\n]", text[i:], maxsplit=1)[0].strip()
            if token:
                return token
    return None


def _fix_shorthand(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac9{19}``, ``\\sqrt2`` -> ``\\sqrt{2}`` (recursively)."""
    out, i = [], 0
    while m := _SHORTHAND.search(s, i):
        out.append(s[i : m.end()])
        j = m.end()
        if m[1] == "sqrt" and s[j : j + 1] == "[":
            k = _closing(s, j)
            if k < 0:
                break
            out.append(s[j : k + 1])
            j = k + 1
        for _ in range(2 if m[1] == "frac" else 1):
            if j >= len(s):
                break
            if s[j] == "{":
                k = _closing(s, j)
                if k < 0:
                    break
                arg, j = s[j + 1 : k], k + 1
            else:
                cmd = re.match(r"\\[A-Za-z]+", s[j:])
                arg = cmd[0] if cmd else s[j]
                j += len(arg)
            out.append("{" + _fix_shorthand(arg) + "}")
        i = j
    return "".join(out) + s[i:]


def normalize_answer(text: str) -> str:
    """Return the canonical string form of a MATH answer (see the module docstring).

    Drops ``\\left``/``\\right``, spacing commands, ``$``, ``\\%``, degree marks, a trailing
    unit (``\\text{ cm}^2``, `` degrees``) and a trailing ``.``; unwraps ``\\text{...}`` and a
    whole-string ``\\boxed{}``; maps ``dfrac``/``tfrac`` to ``frac`` and braces ``\\frac12`` /
    ``\\sqrt2``; removes thousands separators of a lone number and spaces; adds a leading zero
    (``.5`` -> ``0.5``); drops ``x =`` / ``x \\in`` before the answer; ``(C)`` -> ``C``;
    ``a/b`` -> ``\\frac{a}{b}`` for integers; lowercases plain words.
    """
    s = text.strip()
    while (m := _BOX.match(s)) and s[m.end() : m.end() + 1] == "{" and _closing(s, m.end()) == len(s) - 1:
        s = s[m.end() + 1 : -1].strip()
    s = re.sub(r"(?<=\d),\s*\\!\s*(?=\d{3}(?!\d))", "", s)  # "10,\!080": MATH's thousands mark
    s = s.replace("\\\\", "\x01")  # a matrix row break, kept safe from the "\ " rule below
    for old, new in [
        ("\n", " "),
        ("\\!", ""),
        ("\\,", " "),
        ("\\;", " "),
        ("\\:", " "),
        ("\\ ", " "),
        ("~", " "),
        ("\\qquad", " "),
        ("\\quad", " "),
        ("\\(", ""),
        ("\\)", ""),
        ("\\[", ""),
        ("\\]", ""),
        ("{,}", ","),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\mbox", "\\text"),
        ("\\textbf", "\\text"),
        ("\\textrm", "\\text"),
        ("\\mathrm", "\\text"),
        ("\\displaystyle", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\%", ""),
        ("%", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\circ", ""),
        ("\u00b0", ""),
        ("\\leq", "\\le"),
        ("\\geq", "\\ge"),
    ]:
        s = s.replace(old, new)
    s = re.sub(r"\\(?:left|right|[bB]igg?[lr]?)(?![A-Za-z])", "", s)
    s = re.sub(r"\\text\{\s*(?:and|or)\s*\}", ",", s)  # "1 \text{ and } 2" is a list
    # A unit after a number: "15\text{ cm}^2", "5.4 \text{cents}", "30 degrees".
    unit = re.fullmatch(r"(.*?)\s*\\text\{\s*[A-Za-z][A-Za-z\s.]*\}(?:\^\{?[23]\}?)?\s*\.?", s)
    if unit and re.search(r"\d", unit[1]):
        s = unit[1]
    s = re.sub(r"(?<=[\d}])\s+" + _UNITS + r"(?:\^\{?[23]\}?)?\s*\.?$", "", s.strip())
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    if re.fullmatch(r"\s*-?\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*\.?\s*", s):  # "1,000"; "1, 2" is a list
        s = s.replace(",", "")
    # Spaces go, except the one that keeps "\cot x" from becoming the command "\cotx".
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\x00", s)
    s = re.sub(r"\s+", "", s).replace("\x00", " ").replace("\x01", "\\\\").rstrip(".")
    s = re.sub(r"(?<![\w}])\.(?=\d)", "0.", s)
    s = re.sub(r"_\{(\w+)\}", r"_\1", s)  # "4210_{5}" -> "4210_5"
    parts = s.split("=")
    if len(parts) == 2 and _VARIABLE.fullmatch(parts[0]):
        s = parts[1]
    s = re.sub(r"^[A-Za-z]\\in(?![A-Za-z])", "", s)
    s = _fix_shorthand(s)
    if m := re.fullmatch(r"(-?)(\d+)/(\d+)", s):
        s = f"{m[1]}\\frac{{{m[2]}}}{{{m[3]}}}"
    if m := re.fullmatch(r"\(([A-Ea-e])\)", s):
        s = m[1].upper()
    if re.fullmatch(r"[A-Za-z]{2,}", s):
        s = s.lower()
    return s


# ---- LaTeX -> sympy ------------------------------------------------------------------------


def _atom(toks: list[str], i: int) -> tuple[str | None, int]:
    """One operand starting at ``toks[i]`` as Python/sympy source, and the next index."""
    if i >= len(toks):
        return None, i
    t = toks[i]
    if t in ("{", "(", "["):
        inner, j = _seq(toks, i + 1, {"{": "}", "(": ")", "[": ")]"}[t])
        if not inner or j >= len(toks):
            return None, i
        return f"({inner})", j + 1
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        # "1\frac{4}{5}" is a mixed number in MATH answers: 1 + 4/5.
        tail = toks[i + 1 : i + 8]
        if (
            t.isdigit()
            and len(tail) == 7
            and tail[0] == "\\frac"
            and tail[1::3] == ["{", "{"]
            and tail[3::3] == ["}", "}"]
            and tail[2].isdigit()
            and tail[5].isdigit()
        ):
            return f"({t}+{tail[2]}/{tail[5]})", i + 8
        return t, i + 1
    if re.fullmatch(r"[A-Za-z]", t):
        return ("I" if t == "i" else f"s_{t}"), i + 1
    name = t[1:]
    if name == "frac":
        num, j = _atom(toks, i + 1)
        den, j = _atom(toks, j)
        return (f"(({num})/({den}))", j) if num and den else (None, i)
    if name == "sqrt":
        if i + 1 < len(toks) and toks[i + 1] == "[":
            index, j = _seq(toks, i + 2, "]")
            arg, j = _atom(toks, j + 1)
            return (f"(({arg})**(1/({index})))", j) if index and arg else (None, i)
        arg, j = _atom(toks, i + 1)
        return (f"sqrt({arg})", j) if arg else (None, i)
    if name in _FUNCS:
        arg, j = _atom(toks, i + 1)
        return (f"{_FUNCS[name]}({arg})", j) if arg else (None, i)
    constants = {"pi": "pi", "infty": "oo", "infin": "oo"}
    if name in constants:
        return constants[name], i + 1
    if name in _GREEK:
        return f"s_{name}", i + 1
    return None, i


def _seq(toks: list[str], i: int, stop: str) -> tuple[str | None, int]:
    """Operands and operators up to a token in ``stop``, with implicit products made explicit."""
    out: list[str] = []
    operand = False  # the last thing emitted can be multiplied by what follows
    while i < len(toks) and toks[i] not in stop:
        t = toks[i]
        ops = {"+": "+", "-": "-", "*": "*", "\\cdot": "*", "\\times": "*", "/": "/", "\\div": "/"}
        if t in ops:
            out.append(ops[t])
            operand, i = False, i + 1
        elif t == "^":
            power, i = _atom(toks, i + 1)
            if not operand or power is None or "**" in power:  # no towers: 10^{10^{10}} never ends
                return None, i
            out.append(f"**{power}")
        else:
            atom, j = _atom(toks, i)
            if atom is None:
                return None, i
            out.extend(["*", atom] if operand else [atom])
            operand, i = True, j
    return "".join(out), i


def _to_sympy(tex: str):
    """A sympy expression for a normalized scalar answer, or None if it is not one we can read."""
    # Three letters in a row are a word ("Evelyn"), not a product of symbols.
    if len(tex) > _MAX_LEN or re.search(r"(?<![\\A-Za-z])[A-Za-z]{3,}", tex):
        return None
    toks = _TOKEN.findall(tex)
    source, end = _seq(toks, 0, "")
    if not source or end != len(toks):
        return None
    import sympy
    from sympy.parsing.sympy_parser import parse_expr, rationalize, standard_transformations

    names = {n: sympy.Symbol(n) for n in re.findall(r"\bs_\w+", source)}
    names.update({f: getattr(sympy, f) for f in _FUNCS.values()}, pi=sympy.pi, oo=sympy.oo, I=sympy.I, sqrt=sympy.sqrt)
    transformations = standard_transformations + (rationalize,)
    return parse_expr(source, local_dict=names, transformations=transformations, evaluate=False)


def _value(expr, subs: dict):
    """``expr`` at 30 digits as an mpmath complex (no float overflow for huge values, unlike ``complex``).

    None if the value (or an argument inside) is infinite, undefined or beyond 1e100; a
    TypeError if it is not a number at all.
    """
    import mpmath
    import sympy

    non_finite = (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)
    # Arguments of functions and powers are checked innermost first and must stay below 1e100,
    # so no evaluation needs the precision of a giant argument (sin(10^(10^9)) would not end).
    for node in sympy.postorder_traversal(expr):
        if isinstance(node, (sympy.Function, sympy.Pow)):
            for arg in node.args:
                value = arg.evalf(15, subs=subs)
                if value.has(*non_finite) or abs(complex(value)) > 1e100:
                    return None
    value = expr.evalf(30, subs=subs)
    if value.has(*non_finite):
        return None
    real, imag = (sympy.Float(part, 30) for part in value.as_real_imag())  # raises if symbolic
    return mpmath.mpc(str(real), str(imag))


def _close(u, v) -> bool:
    """Equal within a relative tolerance of 1e-9 (absolute 1e-12 near zero)."""
    return bool(abs(u - v) <= _REL_TOL * max(abs(u), abs(v)) or abs(u - v) <= 1e-12)


def _samples(symbols) -> list[dict]:
    """Three fixed, unremarkable points for the free symbols (one empty point if there are none)."""
    ordered = sorted(symbols, key=str)
    return [{s: 0.5 + 0.37 * k + 0.211 * n for n, s in enumerate(ordered)} for k in range(3 if ordered else 1)]


def _scalar_equiv(a: str, b: str) -> bool:
    """Equivalence of two normalized single answers (no top-level commas)."""
    if a == b:
        return True
    if "=" in a or "=" in b:  # equations: equal up to a nonzero factor ("2x=4" ~ "x-2=0")
        sides = [s.split("=") for s in (a, b)]
        if any(len(s) != 2 for s in sides):
            return False
        exprs = [_to_sympy(f"{left}-({right})") for left, right in sides]
    else:
        exprs = [_to_sympy(a), _to_sympy(b)]
    if exprs[0] is None or exprs[1] is None:
        return False
    if exprs[0].free_symbols != exprs[1].free_symbols:
        return False
    pairs = [(_value(exprs[0], p), _value(exprs[1], p)) for p in _samples(exprs[0].free_symbols)]
    if any(u is None or v is None for u, v in pairs):  # infinite: only the same expression matches
        return exprs[0] == exprs[1] and "=" not in a
    if "=" not in a:
        return all(_close(u, v) for u, v in pairs)
    u0, v0 = max(pairs, key=lambda pair: abs(pair[1]))  # proportional: u / v == u0 / v0 everywhere
    return abs(u0) > 1e-12 and abs(v0) > 1e-12 and all(_close(u * v0, v * u0) for u, v in pairs)


def _split_top(s: str, sep: str = ",") -> list[str]:
    """``s`` split at ``sep`` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        depth += 1 if c in "([{" else -1 if c in ")]}" else 0
        if depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
    return parts + [s[start:]]


def _matrix(s: str) -> list[list[str]] | None:
    m = re.fullmatch(r"\\begin\{([pbvB]?matrix)\}(.*)\\end\{\1\}", s)
    if m is None:
        return None
    return [row.split("&") for row in m[2].split("\\\\") if row]


def _intervals(s: str) -> list[tuple[str, list[str], str]] | None:
    """Tuples/intervals and unions of them as (open, elements, close); None for anything else."""
    pieces = []
    for piece in _split_top(s, "\\cup"):
        if len(piece) < 2 or piece[0] not in "([" or piece[-1] not in ")]" or _closing(piece, 0) != len(piece) - 1:
            return None
        pieces.append((piece[0], _split_top(piece[1:-1]), piece[-1]))
    return pieces if len(pieces) > 1 or len(pieces[0][1]) > 1 else None


def _solutions(s: str) -> list[str]:
    """A comma-separated list (optionally a ``\\{set\\}``) as elements, ``x=`` dropped, ``\\pm`` expanded."""
    if s.startswith("\\{") and s.endswith("\\}"):
        s = s[2:-2]
    out = []
    for element in _split_top(s):
        parts = element.split("=")
        element = parts[1] if len(parts) == 2 and _VARIABLE.fullmatch(parts[0]) else element
        if element.count("\\pm") == 1:
            out += [element.replace("\\pm", "+"), element.replace("\\pm", "-")]
        else:
            out.append(element)
    return out


def _equiv_normalized(a: str, b: str) -> bool:
    if a == b:
        return True
    ma, mb = _matrix(a), _matrix(b)
    if ma is not None or mb is not None:
        return (
            ma is not None
            and mb is not None
            and len(ma) == len(mb)
            and all(len(x) == len(y) and all(map(_scalar_equiv, x, y)) for x, y in zip(ma, mb))
        )
    ia, ib = _intervals(a), _intervals(b)
    if ia is not None or ib is not None:  # "(1,2)" is not "[1,2]": brackets must match
        return (
            ia is not None
            and ib is not None
            and len(ia) == len(ib)
            and all(
                p[0] == q[0] and p[2] == q[2] and len(p[1]) == len(q[1]) and all(map(_scalar_equiv, p[1], q[1]))
                for p, q in zip(ia, ib)
            )
        )
    la, lb = _solutions(a), _solutions(b)
    if len(la) == 1 and len(lb) == 1:
        return _scalar_equiv(la[0], lb[0])
    if len(la) != len(lb) or len(la) > 20:
        return False
    unused = list(lb)  # any order: match each element to a distinct equivalent one
    for x in la:
        match = next((k for k, y in enumerate(unused) if _scalar_equiv(x, y)), None)
        if match is None:
            return False
        unused.pop(match)
    return True


def is_equiv(predicted: str | None, reference: str | None) -> bool:
    """True if the two answers are the same after normalization, or mathematically equal.

    Never raises: anything the comparison cannot read (or any sympy error) counts as False.
    """
    if predicted is None or reference is None:
        return False
    try:
        a, b = normalize_answer(predicted), normalize_answer(reference)
        return bool(a and b) and _equiv_normalized(a, b)
    except Exception:  # noqa: BLE001 - sympy raises almost anything on odd input; a model's text must score, not crash
        return False


def extract_answer(completion: str) -> str | None:
    """The last ``\\boxed{}`` content; else what follows the last "answer is"/"Answer:"; else None.

    After "answer is", the first ``$...$`` on the line is taken if there is one, otherwise the
    rest of the line up to a sentence end; a trailing ``.`` and ``$`` are dropped.
    """
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    for m in reversed(list(_ANSWER_IS.finditer(completion))):
        line = completion[m.end() :].strip().split("\n", 1)[0]
        math = re.search(r"\$+([^$]+)\$", line)
        answer = math[1] if math else re.split(r"\.\s", line, maxsplit=1)[0]
        answer = answer.strip().rstrip(".$ ").strip()
        if answer:
            return answer
    return None


def score(completion: str, example: Mapping[str, object]) -> float:
    """1.0 if the completion's answer is equivalent to ``example["answer"]``, else 0.0.

    The verdict is math-verify's (the grader published MATH-500 figures use; run bounded in time,
    rewards/math_verify_grader.py), on the whole completion: every ``\\boxed{}`` counts (two boxes
    are one answer of two parts; a hedge, \\boxed{3} then \\boxed{4}, is the set {3, 4}), else the
    last LaTeX or plain answer. essa's own grader (:func:`extract_answer`, :func:`is_equiv`) decides
    where math-verify is wrong or blind, each case shown by a test: answers written in another base
    (math-verify reads ``4210_5`` as ``4210``), and completions in which math-verify finds no
    answer at all (``Answer: (C)``).
    """
    reference = str(example["answer"])
    predicted = extract_answer(completion)
    own = predicted is not None and is_equiv(predicted, reference)
    if _BASE.search(reference) or (predicted is not None and _BASE.search(predicted)):
        return 1.0 if own else 0.0
    verdict = math_verify_equiv(completion, reference)
    return 1.0 if (own if verdict is None else verdict) else 0.0


# ---- the task: splits and prompts -----------------------------------------------------------

HUB_ID = "HuggingFaceH4/MATH-500"
SYSTEM_PROMPT = "Solve the problem step by step. Put the final answer in \\boxed{}."
# MATH-500 is a 500-problem evaluation set with only a "test" split. It is split by a fixed
# hash order of unique_id: ES train 300, validation 100, test 100. There is no "sft" split.
TRAIN_SIZE = 300
VALIDATION_SIZE = 100


def load_splits(data_dir: Path | None) -> dict[str, list[dict]]:
    if data_dir is not None:
        rows = read_jsonl(data_dir / "math500" / "test.jsonl", required=("problem", "answer", "unique_id"))
    else:
        rows = load_hub_split(HUB_ID, None, "test")
    ordered = stable_order(rows, key="unique_id")
    return take_splits(ordered, [("train", TRAIN_SIZE), ("validation", VALIDATION_SIZE), ("test", None)])


SFT_SPLIT = "train"  # MATH-500 has no separate SFT part: the ES-train problems' reference solutions


def reference_response(example: Mapping[str, object]) -> str:
    """The reference solution; it states its final answer in \\boxed{}, as SYSTEM_PROMPT asks."""
    return str(example["solution"]).strip()


def messages(example: Mapping[str, object], system_prompt: str) -> list[dict]:
    return chat_messages(system_prompt, example["problem"])
