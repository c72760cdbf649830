"""IFD and r-IFD from token log-probabilities (docs/scoring.md).

L(t | c) is the mean cross-entropy of t's tokens given c. IFD(y | x) = exp(L(y|x) - L(y)) (ppl form)
and L(y|x) / L(y) (loss form); r-IFD(x | y) is the same with the reversed prompt. Both forms agree
on the ``< 1`` test. Errors give NaN and a reason, never 0 (the reference code's IFD = 0 passes
every ``< 1`` filter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NAN = float("nan")

# Which rule made a score, stored on every score so that scores of different rules are never mixed.
# v1 (unversioned rows): a BOS before every text whenever the tokenizer declared one, and named
# templates with a space or newline after the assistant tag. v2: exactly the special tokens the
# tokenizer itself adds, and the reference scorer's prompt texts (``templates.REFERENCE_FORMATS``).
SCORING_VERSION = "scoring/v2"


def mean_loss(logprobs: Sequence[float]) -> float:
    """Mean negative log-likelihood of the scored tokens; NaN when there are none."""
    if not logprobs:
        return NAN
    return -math.fsum(logprobs) / len(logprobs)


@dataclass(frozen=True)
class Ratio:
    """One IFD-style ratio in both forms, from the conditioned and the direct loss."""

    loss_cond: float
    loss_direct: float

    @property
    def ppl(self) -> float:
        if math.isnan(self.loss_cond) or math.isnan(self.loss_direct):
            return NAN
        return math.exp(self.loss_cond - self.loss_direct)

    @property
    def loss(self) -> float:
        if math.isnan(self.loss_cond) or math.isnan(self.loss_direct) or self.loss_direct == 0.0:
            return NAN
        return self.loss_cond / self.loss_direct


@dataclass(frozen=True)
class PairScore:
    """Every number the store keeps for one (instruction, response) pair."""

    loss_cond: float
    loss_direct: float
    rloss_cond: float
    rloss_direct: float
    n_response_tokens: int
    n_instruction_tokens: int
    truncated: bool
    score_error: str | None

    @property
    def ifd(self) -> Ratio:
        return Ratio(self.loss_cond, self.loss_direct)

    @property
    def rifd(self) -> Ratio:
        return Ratio(self.rloss_cond, self.rloss_direct)

    def as_columns(self) -> dict[str, float | int | bool | str | None]:
        """The output columns of ``reflectory score`` and the ``scores`` table."""
        return {
            "loss_cond": self.loss_cond,
            "loss_direct": self.loss_direct,
            "ifd_ppl": self.ifd.ppl,
            "ifd_loss": self.ifd.loss,
            "rloss_cond": self.rloss_cond,
            "rloss_direct": self.rloss_direct,
            "rifd_ppl": self.rifd.ppl,
            "rifd_loss": self.rifd.loss,
            "n_response_tokens": self.n_response_tokens,
            "n_instruction_tokens": self.n_instruction_tokens,
            "truncated": self.truncated,
            "score_error": self.score_error,
            "scoring_version": SCORING_VERSION,
        }


SCORE_COLUMNS: tuple[str, ...] = (
    "loss_cond",
    "loss_direct",
    "ifd_ppl",
    "ifd_loss",
    "rloss_cond",
    "rloss_direct",
    "rifd_ppl",
    "rifd_loss",
    "n_response_tokens",
    "n_instruction_tokens",
    "truncated",
    "score_error",
    "scoring_version",
)
