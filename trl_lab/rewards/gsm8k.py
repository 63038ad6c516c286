"""Verifiable GSM8K answer checker and the ``gsm8k`` / ``gsm8k_format`` rewards.

The checker is a reward a policy is optimised against, so it is deliberately
strict and cheap:

* Every completion maps to **at most one** number (or to ``None``); there is no
  way to get credit for a set of candidate answers.
* An explicitly *declared* final answer wins over numbers elsewhere in the
  text.  Declarations are ``#### N``, ``\\boxed{N}``, ``<answer>N</answer>``,
  "the (final) answer is N" (also "answer is: N", "answer = N") and
  "(Final) Answer: N", all case-insensitive.  A line declaration (``####``,
  "answer is", "Answer:") only counts when a number follows the marker with
  nothing but punctuation / markup / LaTeX commands in between, so markdown
  headings such as ``#### Step 1: ...`` are not declarations.
* The declared number is the first one after the marker.  Other numbers in its
  clause (up to the end of its sentence, continued over "or / maybe / but ..."
  continuations) make it a hedge -- and the whole completion incorrect -- when
  they offer an alternative answer: joined to it directly ("18 or 20", "18-20",
  "18/20?", "18 and 20", "18, 20", "18 to 20", "18 (20)"), the declaration
  starts an expression ("16 - 3 - 4 = 9, ..."), or the clause holds a hedging
  word ("either 18 or 20", "18 dollars, or maybe 20", "18 but it might be 20").
  Commentary that offers no other answer is not a hedge: "The answer is 18
  because 9 * 2 = 18.", "Answer: 18 (since 6 * 3 = 18)", "The answer is 18
  dollars for 3 kids." declare 18.  Two declarations of different values are
  refused, and so is a ``\\boxed{}`` / ``<answer>`` declaration holding no number
  at all.  The same value declared several times is fine.
* A negated declaration ("the answer is not 18", "the answer isn't 18") declares
  nothing, and its numbers are no answer either: the fallback below skips its
  clause, so "The answer is not 18." has no answer (not 18), and "The answer is
  not 18, it is 20." reads 20.
* A sign set apart from its digits right after a marker is a sign: "#### - 5"
  declares -5 (nothing precedes it to subtract from); ``gsm8k_format`` still
  pays nothing for it, as it is not a well-formed ``#### -5`` line.
* Without any declaration, the last number in the text counts (unless the last
  two numbers are joined as a hedge, e.g. "... 18 or 20").
* Numbers are normalised: ``$``, thousands commas, ``%``, trailing zeros
  (``18.00`` == ``18``), leading zeros (``018`` == ``18``), a leading ``+``,
  unicode minus and other dash lookalikes, surrounding ``**bold**``.  Units after
  the number are ignored.  Comparison is exact (decimal strings, no floats).
  Fractions are **not** evaluated: ``1/2`` reads as the two numbers 1 and 2 (a
  hedge inside a declaration).  GSM8K answers are all integers.
* More than ``MAX_MARKERS`` line declarations is degenerate output and scores
  as no answer.
* Model text is never evaluated as code, and every step is linear in the input
  length (possessive quantifiers, no regex that can fail after scanning far and
  then restart from the next character, windowed search for the last number),
  so a 1 MB adversarial completion takes a fraction of a second; a typical
  completion takes ~20 microseconds (about 60x faster than ``math_verify``, see
  ``bench/checker.py``).

``gsm8k_format`` scores 1.0 when the last non-empty line is exactly
``#### <number>`` (optional sign, thousands commas, decimals; no ``$``, units or
words) and the completion's extracted answer equals that number, i.e. no other
declaration contradicts it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from itertools import islice
from typing import Any

from trl_lab.completions import completion_text
from trl_lab.rewards.registry import register_reward

__all__ = [
    "extract_answer",
    "parse_reference",
    "check_answer",
    "gsm8k_correctness",
    "gsm8k_format",
]

# --------------------------------------------------------------------------- #
# Normalisation
# --------------------------------------------------------------------------- #
# Dash lookalikes -> ASCII hyphen-minus; "$" dropped (currency and LaTeX math).
_TRANSLATE = str.maketrans(
    {
        "\u2212": "-",  # minus sign
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": "-",  # figure dash
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u2015": "-",  # horizontal bar
        "\ufe58": "-",  # small em dash
        "\ufe63": "-",  # small hyphen-minus
        "\uff0d": "-",  # fullwidth hyphen-minus
    }
)
_DASHES = dict(_TRANSLATE)
_TRANSLATE.update({ord("\uff04"): None, ord("$"): None})  # fullwidth and ASCII dollar signs
_NON_ASCII_SPECIAL = re.compile("[" + "".join(chr(c) for c in _TRANSLATE if c > 127) + "]")
# A decimal digit of any script but ASCII's (``re``'s ``\d`` matches them all).
_UNICODE_DIGIT = re.compile(r"(?![0-9])\d")

# One number: optional sign, integer part with or without thousands commas,
# optional decimal part; or a bare ".5".  All repetitions are possessive, and a
# thousands group must be exactly three digits by itself ((?!\d) inside the
# group), so a malformed chain such as "1,000,0000" ends the match early instead
# of failing after the whole chain (which would rescan it from every later
# digit: quadratic).  A sign glued to a preceding word, number or bracket
# ("16-3") is subtraction.
_BODY = r"(?:(?:\d{1,3}+(?:,\d{3}+(?!\d))++|\d++)(?:\.\d++)?+|\.\d++)"
# Written to start with a character class so that the regex engine can skip to
# candidate characters quickly; equivalent to (?:(?<![\w)\]}])[-+])?+ followed by
# _BODY (the first character is consumed, then re-examined by look-behinds).
_NUM = re.compile(
    r"[-+.\d](?:(?<=[-+])(?<![\w)\]}][-+])" + _BODY
    + r"|(?<=\d)(?:\d{0,2}+(?:,\d{3}+(?!\d))++|\d*+)(?:\.\d++)?+"
    r"|(?<=\.)\d++)"
)
_DIGITS = "0123456789"
_NUMBER_CHARS = frozenset("0123456789,.+-")

# Line declaration markers.  "####", or the word "answer(s)" followed by a
# colon/equals sign or by "is / are / was / would be / will be / should be".
_MARKER = re.compile(
    r"[#Aa](?:(?<=#)###"  # starts with a character class: fast scanning
    r"|(?<![\w][Aa])(?<=[Aa])(?i:nswers?+)"
    r"(?:[ \t]*+\**+[ \t]*+[:=\uff1a]"
    r"|[ \t]++(?i:is|are|was|would[ \t]++be|will[ \t]++be|should[ \t]++be)(?i:n['\u2019]t)?+\b"
    r"(?:[ \t]*+\**+[ \t]*+:)?+))"
)

# What may sit between a line marker and its number: punctuation, markup,
# LaTeX commands (``\boxed{``, ``\text{``); not letters, digits, signs or dots.
_FILLER = re.compile(r"(?:\\[A-Za-z]++|[^\w\n.+-])*+")

# Words allowed between a line marker and its number ("the answer is therefore
# 18", "the answer is either 18 or 20").
_LEAD_WORDS = re.compile(
    r"(?:(?:either|maybe|probably|likely|possibly|perhaps|approximately|about|around|roughly|"
    r"therefore|thus|hence|so|then|now|exactly|just|clearly|simply|definitely|indeed|still|only|"
    r"equal[ \t]++to|given[ \t]++by)\b(?:\\[A-Za-z]++|[^\w\n.+-])*+)*+",
    re.IGNORECASE,
)

# After a declared number: text that joins another number to it as an alternative or an expression ("18 or 20",
# "18-20", "18/20", "18, 20", "18 to 20", "18 (20)", "16 - 3 = 13").
_ALTERNATIVE_NEXT = re.compile(
    r"[ \t*_%]*+(?:[-/,:=+*^~<>&\u00b1\u00d7\u00f7]|\\(?:pm|times|cdot|div)\b"
    r"|(?i:and|to|or|nor|x|vs|versus|through)\b|[(\[][ \t*_]*+[-+]?+[.\d])"
)
# Words anywhere in a declaration's clause that offer another answer ("either 18 or 20", "18, or maybe 20").
_HEDGE_WORD = re.compile(
    r"\b(?i:or|either|maybe|perhaps|possibly|probably|alternatively|otherwise|unless|but|might|could|nor|else)\b"
)
# A declaration that says what the answer is *not*.
_NEGATION = re.compile(r"(?i:not|never)\b")
# A sign set apart from its number ("#### - 5").
_SPACED_SIGN = re.compile(r"([-+])[ \t]++(?=[.\d])")

# A clause that is just one plain number (fast path of _line_declaration).
_SIMPLE_CLAUSE = re.compile(r"[ \t*]*+([-+]?+\d++(?:\.\d++)?+)[ \t*]*+[.!]?+[ \t*]*+")

# End of a declaration clause: a sentence terminator followed by whitespace or
# the end, or a comma that introduces a word ("18, since ..."), unless what
# follows continues the declaration with an alternative ("18. Or maybe 20").
_CLAUSE_END = re.compile(
    r"(?:[.!?;](?=\s|$)|,(?=[ \t]*+[A-Za-z]))"
    r"(?![ \t]*+\**+[ \t]*+(?:or|either|maybe|perhaps|possibly|alternatively|otherwise|but|and|unless)\b)",
    re.IGNORECASE,
)

# Gap text that joins the last two numbers of an undeclared answer as a hedge.
_HEDGE_GAP = re.compile(
    r"[\s*_]*+(?:,|/|\\pm|\u00b1|\bor\b|\band\b)[\s*_]*+(?:(?:maybe|perhaps|possibly)\b[\s*_]*+)?+",
    re.IGNORECASE,
)

# \boxed{...} with up to three levels of nested braces inside (\frac{1}{2},
# \text{\textbf{18}}); the backslash is optional (JSON escaping sometimes eats
# it).  <answer>...</answer>: a closing tag pairs with the latest opening tag.
_BOXED = re.compile(
    r"boxed\{(?P<body>(?:[^{}]++|\{(?:[^{}]++|\{(?:[^{}]++|\{[^{}]*+\})*+\})*+\})*+)\}"
)
_TAG = re.compile(r"<answer>(?P<body>(?:[^<]++|<(?!/?answer>))*+)</answer>", re.IGNORECASE)

# Well-formed final line for the format reward.
_FORMAT_LINE = re.compile(
    r"####[ \t]*+[-+]?+(?:\d{1,3}+(?:,\d{3}+(?!\d))++|\d++)(?:\.\d++)?+[ \t]*+"
)

#: More line-declaration markers than this is degenerate output (a legitimate
#: answer has a handful); such a completion is scored as having no answer.
MAX_MARKERS = 2048

_AMBIGUOUS = object()  # sentinel for a hedged / unparseable declaration


def _ascii_digits(text: str) -> str:
    """Unicode decimal digits (full-width ``１８``, Arabic-Indic ``١٨``, ...) as ASCII ``18`` (linear time)."""
    if text.isascii():
        return text
    return _UNICODE_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group())), text)


def _fold_symbols(text: str) -> str:
    """Map dash lookalikes to ``-``, other scripts' digits to ASCII, and drop ``$`` signs (linear time)."""
    if "$" in text:
        text = text.replace("$", "")
    if not text.isascii():
        text = _ascii_digits(text)
        if _NON_ASCII_SPECIAL.search(text):
            text = text.translate(_TRANSLATE)
    return text


def _canonical_number(raw: str) -> str:
    """Canonical decimal string of a ``_NUM`` match: exact, no floats ("+1,000.50" -> "1000.5")."""
    negative = raw[0] == "-"
    int_part, _, frac = raw.lstrip("+-").partition(".")
    digits = int_part.replace(",", "").lstrip("0") or "0"
    frac = frac.rstrip("0")
    out = digits + ("." + frac if frac else "")
    return "-" + out if negative and out != "0" else out


def _distinct_values(segment: str) -> set[str]:
    """All canonical number values in ``segment`` (C-level scan and dedupe, then canonicalise)."""
    return {_canonical_number(raw) for raw in set(_NUM.findall(segment))}


def _value_of_block(content: str) -> object:
    """Value of a ``\\boxed{}`` / ``<answer>`` body: its single distinct number, else ambiguous."""
    values = _distinct_values(content)
    return values.pop() if len(values) == 1 else _AMBIGUOUS


class _Negated:
    """What a negated declaration gives: no value, and ``length`` characters of its clause to hide from the
    fallback."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length


def _line_declaration(clause: str, negated: bool = False) -> object | None:
    """Value declared by the text after a line marker; None if no number follows the marker; :class:`_Negated` for
    "the answer is not 18" (``negated``: the marker itself was negative, "answer isn't")."""
    simple = None if negated else _SIMPLE_CLAUSE.fullmatch(clause)
    if simple is not None:  # fast path for the common "#### 18" / "answer is 18."
        return _canonical_number(simple.group(1))
    pos = _FILLER.match(clause).end()  # type: ignore[union-attr]  # always matches
    if negated or _NEGATION.match(clause, pos):
        end = _CLAUSE_END.search(clause, pos)
        return _Negated(len(clause) if end is None else end.start())
    pos = _LEAD_WORDS.match(clause, pos).end()  # type: ignore[union-attr]
    sign = _SPACED_SIGN.match(clause, pos)
    first = _NUM.match(clause, pos if sign is None else sign.end())
    if first is None:
        return None  # e.g. a markdown heading "#### Step 1", or "the answer is simple"
    value = _canonical_number(first.group())
    if sign is not None and sign.group(1) == "-" and first.group()[0] not in "+-" and value != "0":
        value = "-" + value
    end = _CLAUSE_END.search(clause, first.end())
    stop = len(clause) if end is None else end.start()
    if not _distinct_values(clause[first.end() : stop]) - {value}:
        return value
    if _ALTERNATIVE_NEXT.match(clause, first.end()) or _HEDGE_WORD.search(clause, first.end(), stop):
        return _AMBIGUOUS  # another number offered as an alternative
    return value  # the other numbers are commentary ("18 because 9 * 2 = 18")


def _block_declarations(text: str) -> tuple[list[object], str]:
    """Declarations of ``\\boxed{}`` / ``<answer>`` blocks, and ``text`` with those blocks blanked."""
    decls: list[object] = []
    if "boxed{" in text:
        decls.extend(_value_of_block(b) for b in _BOXED.findall(text))
        text = _BOXED.sub(" ", text)
    if "<" in text and ("nswer>" in text or "NSWER>" in text or "answer>" in text.lower()):
        decls.extend(_value_of_block(b) for b in _TAG.findall(text))
        text = _TAG.sub(" ", text)
    return decls, text


def _fallback(text: str) -> str | None:
    """Last number of the text, unless it is hedged with the number before it ("18 or 20")."""
    last_digit = max(text.rfind(d) for d in _DIGITS)
    if last_digit < 0:
        return None
    # Only the tail matters: scan a window that ends at the last digit, starts where
    # no number can straddle its edge, and holds the last two numbers (doubling it
    # as needed, so the total work stays linear).
    width = 64
    while True:
        start = max(0, last_digit - width)
        while start > 0 and text[start - 1] in _NUMBER_CHARS:
            width *= 2
            start = max(0, last_digit - width)
        last_two = deque(_NUM.finditer(text, start, last_digit + 1), maxlen=2)
        if len(last_two) == 2 or start == 0:
            break
        width *= 2
    last = last_two[-1]
    value = _canonical_number(last.group())
    if len(last_two) == 2:
        prev = last_two[0]
        if _HEDGE_GAP.fullmatch(text, prev.end(), last.start()) and _canonical_number(prev.group()) != value:
            return None
    return value


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
def extract_answer(text: str) -> str | None:
    """Return the canonical final answer ``text`` declares (e.g. ``"18"``, ``"-3.5"``), or None.

    Declared answers take precedence over other numbers; conflicting or hedged
    declarations give None; without a declaration the last number counts.
    """
    if not text:
        return None
    text = _fold_symbols(text)
    decls, rest = _block_declarations(text)
    if "####" in rest or "nswer" in rest or "NSWER" in rest or "answer" in rest.lower():
        marks = list(islice(_MARKER.finditer(rest), MAX_MARKERS + 1))
    else:
        marks = []
    if len(marks) > MAX_MARKERS:
        return None
    seen: dict[tuple[str, bool], object | None] = {}  # repeated identical clauses are parsed once
    hidden: list[tuple[int, int]] = []  # the clauses of negated declarations
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(rest)
        newline = rest.find("\n", m.end(), end)
        clause = rest[m.end() : end if newline < 0 else newline]
        key = (clause, m.group()[-1] in "tT")  # "answer isn't"
        value = seen[key] if key in seen else seen.setdefault(key, _line_declaration(*key))
        if isinstance(value, _Negated):
            hidden.append((m.start(), m.end() + value.length))
        elif value is not None:
            decls.append(value)
    if not decls:
        if hidden:  # no declared answer; the numbers a negation rules out are none either
            starts, ends = [0, *(e for _, e in hidden)], [*(s for s, _ in hidden), len(rest)]
            text = " ".join(rest[a:b] for a, b in zip(starts, ends))
        return _fallback(text)
    values = set(decls)
    if _AMBIGUOUS in values or len(values) != 1:
        return None
    return values.pop()  # type: ignore[return-value]


def parse_reference(reference: str) -> str:
    """Canonical number of a GSM8K reference: a bare number ("1,000") or a solution ending in ``#### N``.

    Raises ValueError when the reference holds no number, or several different ones.
    """
    if not isinstance(reference, str):
        raise ValueError(f"GSM8K reference must be a string, got {type(reference).__name__}: {reference!r}")
    text = _fold_symbols(reference)
    if "####" in text:
        text = text.rpartition("####")[2]
    values = _distinct_values(text)
    if len(values) != 1:
        what = "no number" if not values else f"several different numbers {sorted(values)}"
        snippet = reference if len(reference) <= 80 else reference[:77] + "..."
        raise ValueError(
            f"cannot parse GSM8K reference answer {snippet!r}: found {what}; "
            "expected a bare number such as '18' or '1,000', or a solution ending in '#### <number>'"
        )
    return values.pop()


def check_answer(completion: str, reference: str) -> bool:
    """True iff the final answer declared by ``completion`` equals ``reference`` numerically."""
    expected = parse_reference(reference)
    return extract_answer(completion) == expected


def _format_ok(text: str) -> bool:
    """Last non-empty line is exactly ``#### <number>`` and agrees with the extracted answer."""
    stripped = text.rstrip()
    if not stripped:
        return False
    # Dash lookalikes are accepted as a minus sign; "$", units or words are not well formed.
    last_line = stripped.rpartition("\n")[2].strip()
    if not last_line.isascii():  # the digits and minus signs the checker reads, as the checker reads them
        last_line = _ascii_digits(last_line).translate(_DASHES)
    if _FORMAT_LINE.fullmatch(last_line) is None:
        return False
    m = _NUM.search(last_line)
    return m is not None and extract_answer(text) == _canonical_number(m.group())


@register_reward("gsm8k")
def gsm8k_correctness(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
    """1.0 for each completion whose final answer equals the row's ``answer`` column, else 0.0."""
    if len(completions) != len(answer):
        raise ValueError(f"gsm8k reward: {len(completions)} completions but {len(answer)} answers")
    return [1.0 if check_answer(completion_text(c), ref) else 0.0 for c, ref in zip(completions, answer)]


@register_reward("gsm8k_format")
def gsm8k_format(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 if the last non-empty line is a well-formed, unambiguous ``#### <number>``, else 0.0.

    "Unambiguous": no other declaration in the completion contradicts that line.
    """
    return [1.0 if _format_ok(completion_text(c)) else 0.0 for c in completions]
