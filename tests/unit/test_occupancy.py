"""Occupancy arithmetic: running / min(capacity, outstanding), time-averaged per stage, and idle time."""

from __future__ import annotations

import pytest

from infra.occupancy import OccupancyMeter, merge_reports


def test_a_full_engine_or_one_running_all_there_is_is_fully_occupied():
    m = OccupancyMeter()
    m.sample(1.0, running=16, capacity=16, outstanding={"instruction": 40})
    m.sample(1.0, running=3, capacity=16, outstanding={"instruction": 3})  # the tail: all that is left
    assert m.report()["instruction"]["occupancy"] == pytest.approx(1.0)
    assert m.report()["instruction"]["idle_seconds"] == 0


def test_waiting_behind_a_long_reply_lowers_occupancy_and_idle_time_counts():
    m = OccupancyMeter()
    m.sample(1.0, running=1, capacity=16, outstanding={"response": 32})  # one long reply, 31 queued
    m.sample(1.0, running=0, capacity=16, outstanding={"response": 32})  # nothing running, work waits
    r = m.report()["response"]
    assert r["occupancy"] == pytest.approx((1 / 16) / 2, abs=1e-4)  # reported to 4 places
    assert r["idle_seconds"] == pytest.approx(1.0) and r["seconds"] == pytest.approx(2.0)


def test_overlapping_stages_share_the_engine_and_no_outstanding_work_is_not_counted():
    m = OccupancyMeter()
    m.sample(2.0, running=8, capacity=16, outstanding={"instruction": 4, "score": 4})
    m.sample(5.0, running=0, capacity=16, outstanding={})
    report = m.report()
    assert set(report) == {"instruction", "score"}
    assert report["instruction"]["occupancy"] == pytest.approx(1.0)
    assert report["score"]["seconds"] == pytest.approx(2.0)


def test_reports_of_two_pools_merge_time_weighted():
    a, b = OccupancyMeter(), OccupancyMeter()
    a.sample(3.0, running=16, capacity=16, outstanding={"score": 100})
    b.sample(1.0, running=0, capacity=16, outstanding={"score": 100})
    merged = merge_reports([a.report(), b.report()])["score"]
    assert merged["occupancy"] == pytest.approx(0.75)
    assert merged["idle_seconds"] == pytest.approx(1.0)


def test_finished_requests_of_an_open_batch_are_not_outstanding():
    """A batch of 8 stays open until its last request ends: with 7 done and 1 running, the engine
    runs all there is."""
    m = OccupancyMeter()
    m.sample(1.0, running=1, capacity=16, outstanding={"generate": 8}, unfinished=1)
    assert m.report()["generate"]["occupancy"] == pytest.approx(1.0)
    m.sample(1.0, running=0, capacity=16, outstanding={"generate": 8}, unfinished=0)  # answer in transit
    assert m.report()["generate"]["idle_seconds"] == 0
