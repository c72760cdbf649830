"""The two arms of an evaluation, made comparable (pure): decontaminated against the test sets, then
the larger sampled down (seeded) so both train on the same number of examples (docs/evaluate.md)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tasks.conversation import PairLike

P = TypeVar("P", bound=PairLike)


@dataclass(frozen=True)
class Arm(Generic[P]):
    """One arm's pairs, with how many decontamination removed and sampling left out."""

    name: str
    pairs: list[P]
    read: int
    contaminated: int = 0
    sampled_out: int = 0


def decontaminated(name: str, pairs: Sequence[P], overlaps: Callable[[str], bool]) -> Arm[P]:
    """The pairs none of whose texts (history, instruction, input, answer) ``overlaps`` a test set."""

    def texts(p: P) -> list[str]:
        return [*(content for _, content in p.history), p.instruction, p.input, p.output]

    kept = [p for p in pairs if not any(t and overlaps(t) for t in texts(p))]
    return Arm(name, kept, len(pairs), len(pairs) - len(kept))


def equal_size(a: Arm[P], b: Arm[P], seed: int) -> tuple[Arm[P], Arm[P]]:
    """Both arms at the smaller one's size: the larger sampled down with ``seed``, in its own order."""
    n = min(len(a.pairs), len(b.pairs))

    def cut(arm: Arm[P]) -> Arm[P]:
        if len(arm.pairs) == n:
            return arm
        chosen = sorted(random.Random(seed).sample(range(len(arm.pairs)), n))
        return Arm(arm.name, [arm.pairs[i] for i in chosen], arm.read, arm.contaminated, len(arm.pairs) - n)

    return cut(a), cut(b)
