"""A role's budget for a run (tasks.budget): reserved before sending, settled with the usage, never
overshot."""

from __future__ import annotations

import threading

import pytest

from tasks.budget import Budget, prompt_tokens_at_most
from tasks.cost import Prices
from tasks.engine import ChatRequest, Completion, Sampling

SAMPLING = Sampling(max_tokens=100)
REQUEST = ChatRequest.user("x" * 200)  # an upper bound of 200 + 8 + 64 prompt tokens


def answer(prompt: int = 60, completion: int = 40) -> Completion:
    return Completion("ok", "stop", prompt, completion)


def test_the_bound_counts_every_byte_and_the_markup() -> None:
    assert prompt_tokens_at_most(REQUEST) == 200 + 8 + 64
    assert prompt_tokens_at_most(ChatRequest.user("é", system="s")) == 2 + 1 + 2 * 8 + 64


def test_a_request_waits_while_others_in_flight_may_leave_room_and_is_refused_when_none_can() -> None:
    budget = Budget(tokens=1000)
    first, final = budget.try_reserve(REQUEST, SAMPLING)
    assert first is not None and not final and budget.reserved_tokens == 372
    second, _ = budget.try_reserve(REQUEST, SAMPLING)
    assert second is not None
    assert budget.try_reserve(REQUEST, SAMPLING) == (None, False)  # 3 x 372 > 1000: wait
    budget.settle(first, answer())
    budget.settle(second, answer())
    assert (budget.spent_tokens, budget.reserved_tokens) == (200, 0)
    while (r := budget.try_reserve(REQUEST, SAMPLING)[0]) is not None:
        budget.settle(r, answer())
    # Refused for good once what is spent leaves less than one request's bound: 700 + 372 > 1000.
    assert budget.spent_tokens == 700
    assert budget.try_reserve(REQUEST, SAMPLING) == (None, True)
    assert budget.refused == 2


def test_a_cost_budget_needs_prices_and_counts_both_sides() -> None:
    with pytest.raises(ValueError, match="prices"):
        Budget(dollars=1.0)
    budget = Budget(dollars=0.001, prices=Prices(input=1.0, output=4.0))  # $ per 1M tokens
    r, _ = budget.try_reserve(REQUEST, SAMPLING)
    assert r is not None and r.dollars == pytest.approx((272 * 1.0 + 100 * 4.0) / 1e6)
    budget.settle(r, answer(60, 40))
    assert budget.spent_dollars == pytest.approx((60 + 160) / 1e6)
    assert budget.describe() == "cost budget of $0.00"


def test_threads_sharing_a_budget_never_overshoot_it() -> None:
    budget = Budget(tokens=5000)
    sent: list[int] = []
    lock = threading.Lock()

    def caller() -> None:
        while True:
            r, final = budget.try_reserve(REQUEST, SAMPLING)
            if final:
                return
            if r is None:
                budget.wait_for_settle(0.01)
                continue
            with lock:
                sent.append(1)
            budget.settle(r, answer(272, 100))  # the worst case: the bound was exact

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.spent_tokens <= 5000 and budget.spent_tokens == 372 * len(sent)
    assert len(sent) == 5000 // 372
