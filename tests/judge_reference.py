"""The reference evaluation's own logic, transcribed to check Reflectory's judge against it.

``reference_parse`` is Cherry_LLM's ``parse_score`` (evaluation/generation/eval.py): [-1, -1] when the
first line is no score pair. ``reference_outcome`` is the papers' rule written case by case.
"""

from __future__ import annotations

from collections.abc import Sequence


def reference_parse(review: str) -> list[float]:
    try:
        sp = review.split("\n")[0].replace(",", " ").split(" ")
        if len(sp) == 2:
            return [float(sp[0]), float(sp[1])]
        raise ValueError("Invalid score pair.")
    except ValueError:
        return [-1, -1]


def reference_outcome(a_first: Sequence[float], b_first: Sequence[float]) -> str:
    """A's outcome: ``a_first`` = (A's, B's) with A shown first, ``b_first`` = (B's, A's)."""
    s1 = (a_first[0] > a_first[1]) - (a_first[0] < a_first[1])
    s2 = (b_first[1] > b_first[0]) - (b_first[1] < b_first[0])
    if (s1, s2) in {(1, 1), (1, 0), (0, 1)}:
        return "win"
    if (s1, s2) in {(-1, -1), (-1, 0), (0, -1)}:
        return "loss"
    return "tie"
