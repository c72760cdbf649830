"""Arithmetic word problems with computed answers (GSM8K style), for trace tests and the demo.

Deterministic for a seed; every answer is computed, never written by hand.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

NAMES = ("Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas")
ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "shells")


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # worked solution ending in "#### N"
    gold: int


def _buy_give(r: random.Random) -> Problem:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(5, 60), r.randint(2, 40)
    c = r.randint(1, a + b - 1)
    total = a + b - c
    q = (
        f"{name} has {a} {item}. {name} buys {b} more and then gives {c} to a friend. "
        f"How many {item} does {name} have now?"
    )
    return Problem(q, f"{a} + {b} = {a + b}. {a + b} - {c} = {total}.\n#### {total}", total)


def _boxes(r: random.Random) -> Problem:
    item = r.choice(ITEMS)
    boxes, per, extra = r.randint(2, 12), r.randint(3, 25), r.randint(0, 9)
    total = boxes * per + extra
    q = (
        f"A shop has {boxes} boxes with {per} {item} in each box and {extra} loose {item}. "
        f"How many {item} are there in total?"
    )
    return Problem(
        q, f"{boxes} * {per} = {boxes * per}. {boxes * per} + {extra} = {total}.\n#### {total}", total
    )


def _share(r: random.Random) -> Problem:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    friends, each = r.randint(2, 9), r.randint(2, 15)
    kept = r.randint(0, 10)
    total = friends * each + kept
    q = (
        f"{name} shares {item} equally among {friends} friends so that each friend gets {each}, "
        f"and keeps {kept} for themselves. How many {item} did {name} start with?"
    )
    return Problem(
        q, f"{friends} * {each} = {friends * each}. {friends * each} + {kept} = {total}.\n#### {total}", total
    )


def _savings(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    weekly, weeks, spent = r.randint(3, 30), r.randint(2, 12), r.randint(1, 20)
    total = weekly * weeks - spent
    q = (
        f"{name} saves ${weekly} every week for {weeks} weeks and then spends ${spent} on a gift. "
        f"How many dollars does {name} have left?"
    )
    return Problem(
        q,
        f"{weekly} * {weeks} = {weekly * weeks}. {weekly * weeks} - {spent} = {total}.\n#### {total}",
        total,
    )


TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (_buy_give, _boxes, _share, _savings)


def generate(n: int, seed: int = 0) -> list[Problem]:
    r = random.Random(seed)
    return [TEMPLATES[i % len(TEMPLATES)](r) for i in range(n)]


def write_jsonl(path: str, n: int, seed: int = 0) -> None:
    import json

    with open(path, "w") as fh:
        for p in generate(n, seed):
            fh.write(json.dumps({"question": p.question, "answer": p.answer}) + "\n")
