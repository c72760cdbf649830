"""Check a trace's ``<output>`` against a gold answer: numbers, multiple-choice letters, or text."""

from __future__ import annotations

import re
import string
from fractions import Fraction

_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?|-?\.\d+")
_ANSWER_MARKER = re.compile(r"####|\\boxed\{|\banswer\b\s*(?:is|=|:)", re.IGNORECASE)
_GSM8K_GOLD = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
_LETTER_PATTERNS = (
    re.compile(r"answer\s*(?:is|:)?\s*\(?([A-E])\)?(?![a-z])", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-E])[).:]?\s*(?:$|\s)"),
    re.compile(r"\(([A-E])\)"),
)


def extract_gold(answer: str | None) -> str | None:
    """GSM8K-style answers end in ``#### N``: the gold is N; otherwise the whole text."""
    if answer is None or not answer.strip():
        return None
    m = _GSM8K_GOLD.search(answer)
    return (m.group(1) if m else answer).strip()


def parse_number(text: str) -> Fraction | None:
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "")
    percent = cleaned.endswith("%")
    cleaned = cleaned.rstrip("%").rstrip(".")
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def first_number(text: str) -> Fraction | None:
    """The first number in the text, normalised."""
    for match in _NUMBER.findall(text):
        value = parse_number(match)
        if value is not None:
            return value
    return None


def final_number(text: str) -> Fraction | None:
    """The number the text gives as its answer: the first one after its last answer marker (``#### N``,
    ``\\boxed{N}``, ``answer is N``, ``answer: N``); without a marker, its one number, when every
    number in it has the same value; otherwise none.

    Not the last number anywhere: an output that rambles on (a small teacher's often does) holds
    numbers by chance, or states one answer and then another, and a number of it matching the gold
    is no verified answer. An output with its working shown needs a marker.
    """
    markers = list(_ANSWER_MARKER.finditer(text))
    if markers:
        return first_number(text[markers[-1].end() :])
    values = {v for m in _NUMBER.findall(text) if (v := parse_number(m)) is not None}
    return values.pop() if len(values) == 1 else None


def choice_letter(text: str) -> str | None:
    for pattern in _LETTER_PATTERNS:
        m = pattern.search(text)
        if m:
            return m.group(1).upper()
    return None


def normalise_text(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def answer_kind(gold: str) -> str:
    if parse_number(gold) is not None:
        return "number"
    if re.fullmatch(r"\(?[A-Ea-e]\)?", gold.strip()):
        return "choice"
    return "text"


def verify(output: str | None, gold: str | None, kind: str = "auto") -> bool | None:
    """True/False when there is a gold answer to compare with, None when there is none."""
    if gold is None or not gold.strip():
        return None
    if output is None:
        return False
    kind = answer_kind(gold) if kind == "auto" else kind
    if kind == "number":
        got, want = final_number(output), parse_number(gold)
        return got is not None and want is not None and got == want
    if kind == "choice":
        return choice_letter(output) == gold.strip().strip("()").upper()
    return normalise_text(output) == normalise_text(gold)
