"""The student's choice among a pair's variants: the reference decision tree (docs/recycle.md).

Variants: ori = (x0, y0), Q = (x1, y1), A = (x0, y0'), QA = (x1, y1'). If IFD(Q) > IFD(ori) the
reflected instruction is harder for the student and its branch is taken: QA is kept when
r-IFD(QA) < r-IFD(Q). Otherwise A is kept when r-IFD(A) < r-IFD(ori). Either way the kept variant
needs IFD < 1 and r-IFD < 1. A pair whose response reflection did not help is discarded, and every
decision says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

VARIANTS = ("ori", "Q", "A", "QA")


@dataclass(frozen=True)
class VariantScore:
    """The two numbers the tree needs for one variant (NaN when the student could not score it)."""

    ifd: float
    rifd: float

    @property
    def scored(self) -> bool:
        return not (math.isnan(self.ifd) or math.isnan(self.rifd))


@dataclass(frozen=True)
class Decision:
    kept: bool
    variant: str | None  # the kept variant, or the one that was judged and dropped
    branch: str  # "reflected" (Q/QA) or "original" (ori/A)
    reason: str


def select_variant(scores: Mapping[str, VariantScore | None]) -> Decision:
    """Apply the decision tree to the scores of one pair; a missing variant is ``None`` or absent."""
    ori, q = scores.get("ori"), scores.get("Q")
    if ori is None or not ori.scored:
        return Decision(False, "ori", "original", "unscored:ori")
    if q is not None and q.scored and q.ifd > ori.ifd:
        return _judge(scores, base="Q", reflected="QA", branch="reflected", base_score=q)
    return _judge(scores, base="ori", reflected="A", branch="original", base_score=ori)


def _judge(
    scores: Mapping[str, VariantScore | None],
    *,
    base: str,
    reflected: str,
    branch: str,
    base_score: VariantScore,
) -> Decision:
    cand = scores.get(reflected)
    if cand is None:
        return Decision(False, reflected, branch, f"missing:{reflected}")
    if not cand.scored:
        return Decision(False, reflected, branch, f"unscored:{reflected}")
    if not cand.rifd < base_score.rifd:
        return Decision(False, reflected, branch, f"rifd_not_lower:{reflected}>={base}")
    if not cand.ifd < 1:
        return Decision(False, reflected, branch, "ifd_ge_1")
    if not cand.rifd < 1:
        return Decision(False, reflected, branch, "rifd_ge_1")
    return Decision(True, reflected, branch, f"kept:{reflected}")
