"""``reflectory report RUN_ID``: one self-contained HTML page of a run, from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)


def report_command(
    run_id: Annotated[str, typer.Argument(help='the run (see: reflectory sql "SELECT run_id FROM runs")')],
    store: Annotated[
        str, typer.Option("--store", "-s", help="local path or s3://bucket/prefix")
    ] = "./factory",
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the page")] = Path("reports"),
    screenshot: Annotated[
        Path | None,
        typer.Option(help="also save a PNG of the page's top, taken by headless Chromium (needs playwright)"),
    ] = None,
) -> None:
    """Write the run's report: plots of its scores, decisions, stages, cost and throughput, its config
    and lineage, and the numbers behind each plot. Open the page with a double click."""
    from storage.report.data import ReportError
    from storage.report.page import write_report
    from storage.report.screenshot import ScreenshotError, take_screenshot
    from storage.store import Store, StoreError

    try:
        page = write_report(Store(store), run_id, out)
        console.print(f"report: {page.resolve()}", soft_wrap=True)
        if screenshot is not None:
            console.print(f"screenshot: {take_screenshot(page, screenshot).resolve()}", soft_wrap=True)
    except (StoreError, ReportError, ScreenshotError) as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from exc
