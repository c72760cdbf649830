"""``reflectory runs``: every run of a store with the status a reader should believe.

A run that says it is running is shown as running only while its heartbeat is fresh (and, on this
host, its process exists); one that died without ending is ``crashed`` (``storage.runs``).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
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
    table = Table(title=f"runs in {store}")
    table.add_column("run", overflow="fold")
    table.add_column("flow")
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("ended", no_wrap=True)
    table.add_column("cause", overflow="fold", min_width=16)
    for r in rows:
        table.add_row(
            r["run_id"], r.get("flow") or "", r["status"], _minute(r.get("started_at")),
            _minute(r.get("ended_at")), r.get("cause") or "",
        )  # fmt: skip
    console.print(table)


def _minute(iso: str | None) -> str:
    """``2026-12-07T09:52:30.67+00:00`` as ``2026-12-07 09:52`` (UTC, as stored)."""
    return (iso or "")[:16].replace("T", " ")
