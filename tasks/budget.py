"""One spending limit per role for a whole run, in tokens or dollars, reserved before sending (pure).

A request reserves what it could cost at most: an upper bound of its prompt's tokens (a byte-level
tokenizer writes at most one token per byte of text, plus a few per message for the chat markup)
plus its ``max_tokens``, at the role's prices. It is sent only if the reservation fits beside what
is spent and what other requests in flight have reserved, so the budget is never overshot however
many replicas send at once. The answer's usage then replaces the reservation. A request that does
not fit is never sent: its row fails as ``token_budget_exhausted`` and its shard stays uncommitted,
so a rerun of the same run id with a larger budget sends it (docs/api-teacher.md, "Budgets").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tasks.cost import Prices
from tasks.engine import ChatRequest, Completion, Sampling
from tasks.runs import RunStopped

BUDGET_EXHAUSTED = "token_budget_exhausted"
# Markup tokens a chat template may add per message and per chat (role names, separators, a
# default system prompt), on top of one token per byte of text.
MARKUP_PER_MESSAGE = 8
MARKUP_PER_CHAT = 64


class BudgetStopped(RunStopped):
    """A stage's shard met its role's budget: requests were refused, so the shard is not committed."""

    final = True  # no retry can change it

    @classmethod
    def of(cls, stage: str, shard: int, unsent: int, status: str) -> BudgetStopped:
        """From the status of a refused request (``token_budget_exhausted (token budget of ...)``)."""
        budget = status.split("(", 1)[1].rsplit(")", 1)[0] if "(" in status else "budget"
        return cls(f"the {budget} ran out: {unsent} requests of stage {stage} (shard {shard}) were not sent")


def exhausted(budget: Budget) -> str:
    """The error of a request refused by ``budget``, naming it (``token_budget_exhausted (...)``)."""
    return f"{BUDGET_EXHAUSTED} ({budget.describe()})"


def prompt_tokens_at_most(request: ChatRequest) -> int:
    """An upper bound of a chat's prompt tokens without its tokenizer."""
    text = sum(len(str(m.get("content") or "").encode()) for m in request.messages)
    return text + MARKUP_PER_MESSAGE * len(request.messages) + MARKUP_PER_CHAT


@dataclass(frozen=True)
class Reservation:
    tokens: int
    dollars: float


class Budget:
    """A role's tokens and/or dollars for one run, shared by every caller (thread-safe)."""

    def __init__(self, tokens: int | None = None, dollars: float | None = None, prices: Prices | None = None):
        if dollars is not None and not (prices and (prices.input or prices.output)):
            raise ValueError("a cost budget (max_cost) needs the role's prices per 1M tokens")
        self.tokens = tokens
        self.dollars = dollars
        self.prices = prices or Prices()
        self.spent_tokens = 0
        self.spent_dollars = 0.0
        self.reserved_tokens = 0
        self.reserved_dollars = 0.0
        self.refused = 0
        self._changed = threading.Condition()

    @property
    def limited(self) -> bool:
        return self.tokens is not None or self.dollars is not None

    def describe(self) -> str:
        parts = []
        if self.tokens is not None:
            parts.append(f"token budget of {self.tokens:,} tokens")
        if self.dollars is not None:
            parts.append(f"cost budget of ${self.dollars:,.2f}")
        return " and ".join(parts) or "no budget"

    def _dollars(self, prompt: int, completion: int) -> float:
        return (prompt * (self.prices.input or 0) + completion * (self.prices.output or 0)) / 1e6

    def try_reserve(self, request: ChatRequest, sampling: Sampling) -> tuple[Reservation | None, bool]:
        """A reservation, or (None, True) when the request can never fit (counted as refused), or
        (None, False) when it may fit once requests in flight have settled."""
        with self._changed:
            return self._try(request, sampling)

    def _try(self, request: ChatRequest, sampling: Sampling) -> tuple[Reservation | None, bool]:
        prompt = prompt_tokens_at_most(request)
        completion = request.max_tokens or sampling.max_tokens
        wanted = Reservation(prompt + completion, self._dollars(prompt, completion))
        over_tokens = self.tokens is not None and self.spent_tokens + wanted.tokens > self.tokens
        over_dollars = self.dollars is not None and self.spent_dollars + wanted.dollars > self.dollars
        if over_tokens or over_dollars:
            self.refused += 1
            return None, True
        fits_tokens = (
            self.tokens is None or self.spent_tokens + self.reserved_tokens + wanted.tokens <= self.tokens
        )
        fits_dollars = (
            self.dollars is None
            or self.spent_dollars + self.reserved_dollars + wanted.dollars <= self.dollars
        )
        if not (fits_tokens and fits_dollars):
            return None, False
        self.reserved_tokens += wanted.tokens
        self.reserved_dollars += wanted.dollars
        return wanted, False

    def settle(self, reservation: Reservation, completion: Completion) -> None:
        """The answer's own usage replaces its reservation (none for a request that failed unanswered)."""
        with self._changed:
            self.reserved_tokens -= reservation.tokens
            self.reserved_dollars -= reservation.dollars
            self.spent_tokens += completion.prompt_tokens + completion.completion_tokens
            self.spent_dollars += self._dollars(completion.prompt_tokens, completion.completion_tokens)
            self._changed.notify_all()

    def wait_for_settle(self, timeout: float = 1.0) -> None:
        with self._changed:
            self._changed.wait(timeout)
