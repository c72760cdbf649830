"""``reflectory runs``: every run of a store with the status a reader should believe.

A run that says it is running is shown as running only while its heartbeat is fresh (and, on this
host, its process exists); one that died without ending is ``crashed`` (``storage.runs``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


def runs_command(
    store: Annotated[
        str, typer.Option("--store", "-s", help="local path or s3://bucket/prefix")
    ] = "./factory",
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per line instead of a table")
    ] = False,
    limit: Annotated[int, typer.Option(help="the newest N runs")] = 20,
) -> None:
    """List the store's runs, newest first: flow, status (running, completed, failed, cancelled,
    stopped, or crashed for a run that died without ending), times, and why a run did not complete."""
    from storage.browse import Browser
    from storage.store import Store, StoreError

    try:
        rows = Browser(Store(store)).runs()[:limit]
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    if as_json:
        for r in rows:
            print(
                json.dumps(
                    {k: r.get(k) for k in ("run_id", "flow", "status", "cause", "started_at", "ended_at")}
                )
            )
        return
    table = Table(title=f"runs in {store} (times in UTC)", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run", no_wrap=True)
    table.add_column("flow", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("took", no_wrap=True, justify="right")
    if any(r.get("cause") for r in rows):
        table.add_column("cause", overflow="fold", min_width=16)
    for r in rows:
        cells = [r["run_id"], r.get("flow") or "", r["status"], _minute(r.get("started_at")), _took(r)]
        table.add_row(*cells, *([r.get("cause") or ""] if len(table.columns) > len(cells) else []))
    console.print(table)


def _minute(iso: str | None) -> str:
    """``2026-12-07T09:52:30.67+00:00`` as ``12-07 09:52`` (UTC, as stored)."""
    return (iso or "")[5:16].replace("T", " ")


def _took(row: dict[str, Any]) -> str:
    """How long an ended run took (``1h 02m``, ``3m 05s``, ``42s``); empty for one that has not ended."""
    from datetime import datetime

    start, end = row.get("started_at"), row.get("ended_at")
    if not start or not end:
        return ""
    seconds = int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
