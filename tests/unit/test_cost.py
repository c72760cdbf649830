"""Cost per stage, run and kept pair: tokens times token prices, device-hours times their price,
and never a cost where no price was given."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tasks.cost import Prices, StageUsage, cost_report, format_cost, stage_cost

TEACHER = StageUsage(
    "instruction", "teacher", prompt_tokens=2_000_000, completion_tokens=500_000, device_seconds=7200
)
STUDENT = StageUsage("score", "student", prompt_tokens=1_000, device_seconds=1800)
SELECT = StageUsage("select", None)


def test_token_prices_apply_per_million_tokens() -> None:
    assert stage_cost(TEACHER, Prices(input=0.5, output=2.0)) == pytest.approx(2 * 0.5 + 0.5 * 2.0)


def test_device_hours_apply_to_engine_time() -> None:
    assert stage_cost(TEACHER, Prices(device_hour=3.0)) == pytest.approx(2 * 3.0)
    assert stage_cost(STUDENT, Prices(device_hour=3.0)) == pytest.approx(0.5 * 3.0)


def test_no_price_no_cost() -> None:
    assert stage_cost(TEACHER, Prices()) is None
    assert stage_cost(TEACHER, None) is None
    assert stage_cost(SELECT, Prices(input=1.0)) is None  # a stage without a model costs nothing to price
    report = cost_report([TEACHER, STUDENT, SELECT], {}, kept=10)
    assert report["total"] is None and report["per_kept_pair"] is None and not report["priced"]
    assert all(s["cost"] is None for s in report["stages"])
    assert report["prompt_tokens"] == 2_001_000 and report["device_hours"] == pytest.approx(2.5)


def test_a_run_costs_the_sum_of_its_stages_and_each_kept_pair_its_share() -> None:
    prices = {"teacher": Prices(input=0.5, output=2.0), "student": Prices(device_hour=2.0)}
    report = cost_report([TEACHER, STUDENT, SELECT], prices, kept=4)
    assert report["total"] == pytest.approx(2.0 + 1.0)
    assert report["priced"] and report["per_kept_pair"] == pytest.approx(0.75)
    assert [s["cost"] for s in report["stages"]] == [pytest.approx(2.0), pytest.approx(1.0), None]


def test_a_partly_priced_run_says_so() -> None:
    report = cost_report([TEACHER, STUDENT], {"teacher": Prices(input=1.0)}, kept=0)
    assert report["total"] == pytest.approx(2.0) and not report["priced"]
    assert report["per_kept_pair"] is None  # nothing kept: no share to give


def test_prices_are_checked() -> None:
    with pytest.raises(ValidationError):
        Prices(input=-1)
    with pytest.raises(ValidationError):
        Prices.model_validate({"per_token": 1})


def test_costs_read_well() -> None:
    assert format_cost(None) == "-"
    assert format_cost(12.345) == "$12.35"
    assert format_cost(0.0001234) == "$0.000123"
    assert format_cost(0.0) == "$0"
