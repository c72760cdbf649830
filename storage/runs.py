"""What the ``runs`` table says of each run, read with its heartbeat: the latest row per run, and
whether a run that says ``running`` is still going (``tasks.runs.live_status``).

A run writes a row when it starts and another when it ends (a resumed run: two more), so readers
take each run's latest row: the one with the latest ``ended_at``, or ``started_at`` for a start row.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from tasks.runs import live_status

from .heartbeats import Heartbeats
from .store import Store

# Each run's latest row, as a subquery: ``SELECT ... FROM ({LATEST_RUNS}) AS runs``.
LATEST_RUNS = (
    "SELECT * FROM runs QUALIFY row_number() OVER "
    "(PARTITION BY run_id ORDER BY coalesce(ended_at, started_at) DESC, ended_at IS NULL) = 1"
)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has that id (one we may not signal still exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStatuses:
    """Each run's status as a reader should show it: a ``running`` row is believed only while its
    heartbeat is fresh (and, on this host, its process exists)."""

    def __init__(self, store: Store) -> None:
        self._beats = Heartbeats(store)
        self._host = socket.gethostname()

    def of(self, run_id: str, recorded: str) -> str:
        beat = self._beats.read(run_id) if recorded == "running" else None
        return live_status(recorded, beat, datetime.now(UTC), this_host=self._host, alive=pid_alive)

    def apply(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` (each with ``run_id`` and ``status``) with the status a reader should see."""
        if not any(r.get("status") == "running" for r in rows):
            return rows
        beats = self._beats.read_all()
        now = datetime.now(UTC)
        for r in rows:
            if r.get("status") == "running":
                r["status"] = live_status(
                    "running", beats.get(r["run_id"]), now, this_host=self._host, alive=pid_alive
                )
        return rows


def live_runs(store: Store, *, besides: str | None = None) -> list[str]:
    """Runs of this store that are still going (a fresh heartbeat), other than ``besides``."""
    if not store.exists("runs"):
        return []
    rows = (
        store.sql(f"SELECT run_id, status FROM ({LATEST_RUNS}) AS runs WHERE status = 'running'")
        .to_arrow_table()
        .to_pylist()
    )
    return [
        r["run_id"]
        for r in RunStatuses(store).apply(rows)
        if r["status"] == "running" and r["run_id"] != besides
    ]
