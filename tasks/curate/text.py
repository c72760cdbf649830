"""Text normalisation shared by exact dedup, near dedup and decontamination.

Two texts that differ only in case, Unicode form, punctuation or spacing are the same text for
curation: ``normalise`` lowercases (NFKC first), turns punctuation into spaces and collapses
whitespace; ``words`` is its split.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def words(text: str) -> list[str]:
    return normalise(text).split()


def join_fields(values: Sequence[object]) -> str:
    """The text of several fields of one row (``None`` is empty); a newline keeps them apart."""
    return "\n".join("" if v is None else str(v) for v in values)


def shingles(tokens: Sequence[str], size: int) -> set[str]:
    """Word n-grams as strings; a text shorter than ``size`` words is one shingle (if not empty)."""
    if len(tokens) < size:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}
