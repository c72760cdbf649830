"""The reference aggregation of pairwise verdicts (Cherry_LLM ``review_eval_score.py``), pure.

An item is judged twice: answer A shown first, then answer B shown first. Answer A **wins** when it
scores higher in both orders, or higher in one and tied in the other; it **loses** in the mirror
cases; anything else (two ties, or orders that disagree) is a **tie**. An item whose either reply had
no score pair is **failed** and counted apart: never a tie. The winning score is
``(wins - losses) / n + 1`` over the judged items (failed ones left out), from 0 (all lost) to 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["win", "tie", "loss", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("win", "tie", "loss", "failed")


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def outcome(a_first: tuple[float, ...] | None, b_first: tuple[float, ...] | None) -> Outcome:
    """A's outcome from the scores of both orders: ``a_first`` = (A's, B's) with A shown first,
    ``b_first`` = (B's, A's) with B shown first; None for a reply without a score pair."""
    if a_first is None or b_first is None:
        return "failed"
    first = _sign(a_first[0] - a_first[1])
    second = _sign(b_first[1] - b_first[0])
    if first + second > 0 and min(first, second) >= 0:
        return "win"
    if first + second < 0 and max(first, second) <= 0:
        return "loss"
    return "tie"


@dataclass(frozen=True)
class Tally:
    """Counts of outcomes and the winning score of answer A against answer B."""

    wins: int = 0
    ties: int = 0
    losses: int = 0
    failed: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[str]) -> Tally:
        counts = dict.fromkeys(OUTCOMES, 0)
        for o in outcomes:
            if o not in counts:
                raise ValueError(f"unknown outcome {o!r}; outcomes: {', '.join(OUTCOMES)}")
            counts[o] += 1
        return cls(counts["win"], counts["tie"], counts["loss"], counts["failed"])

    @property
    def judged(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def winning_score(self) -> float | None:
        """``(wins - losses) / judged + 1``; None when no item was judged."""
        return (self.wins - self.losses) / self.judged + 1 if self.judged else None

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.wins + other.wins,
            self.ties + other.ties,
            self.losses + other.losses,
            self.failed + other.failed,
        )

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "failed": self.failed,
            "n": self.judged + self.failed,
            "winning_score": self.winning_score,
        }


def winning_score_interval(
    outcomes: Iterable[str], *, draws: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """A percentile bootstrap interval of the winning score over items: the judged items resampled
    with replacement ``draws`` times (seeded), failed items left out as the score leaves them out;
    None when no item was judged."""
    import random

    judged = [o for o in outcomes if o != "failed"]
    if not judged:
        return None
    rng = random.Random(seed)
    value = {"win": 1, "tie": 0, "loss": -1}
    points = [value[o] for o in judged]
    n = len(points)
    scores = sorted(sum(rng.choices(points, k=n)) / n + 1 for _ in range(draws))
    tail = (1 - level) / 2
    low = scores[int(tail * (draws - 1))]
    high = scores[round((1 - tail) * (draws - 1))]
    return low, high
