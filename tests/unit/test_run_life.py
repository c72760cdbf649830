"""A run's life as readers see it: how it ended, and whether one that says 'running' still is.

Pure rules (``tasks.runs``) in milliseconds, then the same rules over a real Delta store with the
heartbeat objects beside its tables (``storage.runs``, ``storage.browse``): a run that started and
never ended is ``crashed`` as soon as its heartbeat is stale or its process is gone.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.browse import Browser
from storage.heartbeats import Heartbeats
from storage.runs import RunStatuses
from storage.store import Store, StoreError
from tasks.runs import (
    STALE_AFTER_S,
    Heartbeat,
    RunCancelled,
    RunStopped,
    beats_elsewhere,
    ending,
    live_status,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def beat(age_s: float, *, status: str = "running", host: str = "here", pid: int = 1) -> Heartbeat:
    at = (NOW - timedelta(seconds=age_s)).isoformat()
    return Heartbeat("r1", "recycle", host, pid, at, at, status)  # type: ignore[arg-type]


class TerminationSignal(BaseException):
    """Named as Prefect's: a worker's SIGTERM inside a flow run."""


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (None, "completed"),
        (KeyboardInterrupt(), "cancelled"),
        (TerminationSignal("SIGTERM"), "cancelled"),
        (RunCancelled("from the UI"), "cancelled"),
        (RunStopped("the token budget ran out"), "stopped"),
        (ValueError("bad row 3\nmore text"), "failed"),
        (SystemExit(0), "completed"),
        (SystemExit(2), "failed"),
    ],
)
def test_how_a_run_ended(exc: BaseException | None, status: str) -> None:
    assert ending(exc)[0] == status


def test_another_process_of_the_same_run_is_seen_while_its_beat_is_fresh() -> None:
    """What keeps a resumed run from compacting while its first attempt may still commit."""
    assert beats_elsewhere(beat(5, pid=2), "here", 1, NOW)
    assert beats_elsewhere(beat(5, host="there"), "here", 1, NOW)
    assert not beats_elsewhere(beat(5), "here", 1, NOW)  # its own beat
    assert not beats_elsewhere(beat(STALE_AFTER_S + 1, pid=2), "here", 1, NOW)  # died long ago
    assert not beats_elsewhere(beat(5, pid=2, status="cancelled"), "here", 1, NOW)  # ended
    assert not beats_elsewhere(None, "here", 1, NOW)


def test_a_failure_cause_is_one_short_line() -> None:
    status, cause = ending(RuntimeError("engine died\n" + "x" * 1000))
    assert status == "failed" and cause == "RuntimeError: engine died"
    _, long = ending(RuntimeError("y" * 1000))
    assert long is not None and len(long) == 300 and "\n" not in long


def test_running_is_believed_only_while_the_heartbeat_is_fresh() -> None:
    assert live_status("running", beat(5), NOW) == "running"
    assert live_status("running", beat(STALE_AFTER_S + 1), NOW) == "crashed"
    assert live_status("running", None, NOW) == "crashed"
    # A run on this host whose process is gone died, however fresh its last beat.
    assert live_status("running", beat(1), NOW, this_host="here", alive=lambda pid: False) == "crashed"
    assert live_status("running", beat(1), NOW, this_host="here", alive=lambda pid: True) == "running"
    assert live_status("running", beat(1, host="other"), NOW, this_host="here", alive=lambda p: False) == (
        "running"
    )
    # An ended run says so in its row; a last beat that ended stands in for a row that never landed.
    assert live_status("cancelled", beat(9999), NOW) == "cancelled"
    assert live_status("running", beat(1, status="cancelled"), NOW) == "cancelled"


def _row(run_id: str, status: str, started: datetime, ended: datetime | None) -> dict[str, object]:
    return {"run_id": run_id, "flow": "recycle", "status": status, "started_at": started, "ended_at": ended,
            "cause": None}  # fmt: skip


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(proc.stdout)


def test_readers_see_each_runs_latest_row_and_its_liveness(tmp_path: Path) -> None:
    import os
    import socket

    store = Store(str(tmp_path / "factory"), create=True)
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    host = socket.gethostname()
    store.append(
        "runs",
        [
            _row("done", "running", t0, None),
            _row("done", "completed", t0, t0 + timedelta(minutes=1)),
            # resumed after a cancel: the latest row is the second start's
            _row("resumed", "running", t0, None),
            _row("resumed", "cancelled", t0, t0 + timedelta(minutes=1)),
            _row("resumed", "running", t0 + timedelta(minutes=2), None),
            _row("alive", "running", t0, None),
            _row("killed", "running", t0, None),
            _row("stale", "running", t0, None),
        ],
    )
    beats = Heartbeats(store)
    now = datetime.now(UTC).isoformat()
    old = (datetime.now(UTC) - timedelta(seconds=STALE_AFTER_S + 5)).isoformat()
    beats.write(Heartbeat("resumed", "recycle", host, os.getpid(), now, now))
    beats.write(Heartbeat("alive", "recycle", host, os.getpid(), now, now))
    beats.write(Heartbeat("killed", "recycle", host, dead_pid(), now, now))
    beats.write(Heartbeat("stale", "recycle", "elsewhere", 1, old, old))
    statuses = {r["run_id"]: r["status"] for r in Browser(store).runs()}
    assert statuses == {
        "done": "completed",
        "resumed": "running",
        "alive": "running",
        "killed": "crashed",
        "stale": "crashed",
    }
    assert Browser(store).run("killed")["status"] == "crashed"
    assert RunStatuses(store).of("alive", "running") == "running"
    assert set(beats.read_all()) == {"resumed", "alive", "killed", "stale"}


def test_a_run_id_outside_the_allowed_characters_never_reaches_a_predicate(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "factory"), create=True)
    with pytest.raises(StoreError, match="run id"):
        store.commit_shard("selected", [], run_id="x' OR '1'='1", stage="select", shard=0)


def test_the_runs_command_lists_each_run_with_the_status_to_believe(tmp_path: Path) -> None:
    import json

    from tests.cli import reflectory

    store = Store(str(tmp_path / "factory"), create=True)
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    store.append(
        "runs",
        [
            _row("gone", "running", t0, None),  # no heartbeat: it never said more
            _row("failed-one", "running", t0 - timedelta(minutes=1), None),
            {**_row("failed-one", "failed", t0 - timedelta(minutes=1), t0), "cause": "ValueError: bad row 3"},
        ],
    )
    out = reflectory("runs", "--store", store.uri, "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["run_id"], r["status"], r["cause"]) for r in rows] == [
        ("gone", "crashed", None),
        ("failed-one", "failed", "ValueError: bad row 3"),
    ]
    table = reflectory("runs", "--store", store.uri)
    assert "crashed" in table.stdout and "failed" in table.stdout
    missing = reflectory("runs", "--store", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no store at" in missing.stderr
