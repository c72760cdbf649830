"""A word-level diff of an original text and its rewrite, as segments a template marks up.

Pure: ``difflib`` over words with their trailing spaces, so that joining the segments gives back
either text exactly. No peer shows what a teacher changed; this is what the pairs page shows.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

_WORDS = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True)
class Segment:
    op: Literal["same", "del", "ins"]
    text: str


def words(text: str) -> list[str]:
    return _WORDS.findall(text or "")


def word_diff(old: str | None, new: str | None) -> list[Segment]:
    """Segments that read as ``old`` with deletions struck and insertions marked: the ``same`` and
    ``del`` segments join to ``old``, the ``same`` and ``ins`` segments to ``new``."""
    a, b = words(old or ""), words(new or "")
    out: list[Segment] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(Segment("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(Segment("del", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(Segment("ins", "".join(b[j1:j2])))
    return out


def changed_fraction(old: str | None, new: str | None) -> float:
    """How much of the text the rewrite changed (0: identical, 1: nothing kept), by words."""
    a, b = words(old or ""), words(new or "")
    if not a and not b:
        return 0.0
    return 1.0 - difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()
