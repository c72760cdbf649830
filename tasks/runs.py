"""A run's identity and life, as pure logic: ids, how a run ends, and how a reader tells a run that is
going from one that died without a word (``docs/architecture.md``, "Runs").

A run records itself when it starts (a ``runs`` row with status ``running``) and again when it ends,
as ``completed``, ``failed`` (with the cause in one line), ``cancelled`` (Ctrl-C, SIGTERM, a cancel
from Prefect) or ``stopped`` (a budget ran out). While it runs it rewrites a small heartbeat object
beside the tables every ``HEARTBEAT_S``; a Delta commit per beat would bloat the table's log. A run
whose latest row says ``running`` but whose heartbeat is older than ``STALE_AFTER_S`` (or whose
process is gone from this host) died without ending: readers call it ``crashed``.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

RunStatus = Literal["running", "completed", "failed", "cancelled", "stopped", "crashed"]
RUNNING: RunStatus = "running"
COMPLETED: RunStatus = "completed"
FAILED: RunStatus = "failed"
CANCELLED: RunStatus = "cancelled"
STOPPED: RunStatus = "stopped"
CRASHED: RunStatus = "crashed"  # a reader's word: the run never said how it ended
ENDED: tuple[RunStatus, ...] = (COMPLETED, FAILED, CANCELLED, STOPPED)

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0  # six beats missed; with the viewer's refresh, a dead run shows within 2 minutes
CAUSE_CHARS = 300

# Exceptions that mean someone stopped the run, by class name: Prefect's are not imported here.
_CANCELLING = ("KeyboardInterrupt", "TerminationSignal", "RunCancelled", "CancelledRun", "Abort")


def new_run_id(flow: str) -> str:
    """Sortable by time, readable, unique enough for concurrent runs."""
    return f"{flow}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


class RunCancelled(Exception):
    """Someone asked the run to stop (Ctrl-C, SIGTERM, a cancel from Prefect)."""


class RunStopped(Exception):
    """The run stopped itself on a limit the user set (a budget); what is committed stays."""


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= CAUSE_CHARS else line[: CAUSE_CHARS - 3] + "..."


def ending(exc: BaseException | None) -> tuple[RunStatus, str | None]:
    """How a run that left its context with ``exc`` (None: normally) ended, and the cause in one line."""
    if exc is None:
        return COMPLETED, None
    if isinstance(exc, RunStopped):
        return STOPPED, str(exc)
    if any(k.__name__ in _CANCELLING for k in type(exc).__mro__):
        return CANCELLED, "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else one_line(exc)
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return COMPLETED, None
    return FAILED, one_line(exc)


@dataclass(frozen=True)
class Heartbeat:
    """What a running run says about itself, beside the tables: who runs it, where, and when it last
    said so. Rewritten every ``HEARTBEAT_S``; its last write carries the final status."""

    run_id: str
    flow: str
    host: str
    pid: int
    started_at: str  # ISO 8601, UTC
    beat_at: str  # ISO 8601, UTC
    status: RunStatus = RUNNING

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Heartbeat:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def age_s(self, now: datetime) -> float:
        return (now - datetime.fromisoformat(self.beat_at)).total_seconds()


def live_status(
    recorded: str,
    beat: Heartbeat | None,
    now: datetime,
    *,
    this_host: str | None = None,
    alive: Any = None,
) -> RunStatus | str:
    """What a reader should call a run whose latest ``runs`` row says ``recorded``.

    A run that says ``running`` is running only while its heartbeat is fresh and, when it runs on
    this host, its process exists (``alive(pid) -> bool``). A run that ended says so itself; a
    heartbeat that ended but whose row did not land (the store was down) is believed.
    """
    if recorded != RUNNING:
        return recorded
    if beat is None:
        return CRASHED
    if beat.status != RUNNING:
        return beat.status
    if beat.age_s(now) > STALE_AFTER_S:
        return CRASHED
    if this_host is not None and alive is not None and beat.host == this_host and not alive(beat.pid):
        return CRASHED
    return RUNNING


def beats_elsewhere(beat: Heartbeat | None, host: str, pid: int, now: datetime) -> bool:
    """Whether ``beat`` (the last heartbeat of a run id) is a fresh one written by a process other than
    (``host``, ``pid``): another attempt of the same run that is still going and may still commit."""
    if beat is None or beat.status != RUNNING or (beat.host, beat.pid) == (host, pid):
        return False
    return beat.age_s(now) <= STALE_AFTER_S
