"""``reflectory ingest``, ``reflectory sql`` and ``reflectory store history|compact|vacuum``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)

StoreOpt = Annotated[str, typer.Option("--store", "-s", help="local path or s3://bucket/prefix")]
store_app = typer.Typer(no_args_is_help=True, help="Inspect and maintain the store's Delta tables.")


def _open(uri: str, *, create: bool = False) -> Any:
    """The store at ``uri``; only writing commands create one, reading a missing one is an error."""
    from storage.store import Store, StoreError

    try:
        return Store(uri, create=create)
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from exc


def ingest_command(
    input: Annotated[str, typer.Option("--input", "-i", help="file, folder or Hugging Face dataset")],
    store: StoreOpt = "./factory",
    run_id: Annotated[str | None, typer.Option(help="recorded on every row")] = None,
) -> None:
    """Load pairs into ``seeds`` (new ids only) and bad rows into ``rejects``, with line and reason."""
    from storage.ingest import ingest_to_store
    from tasks.runs import new_run_id

    st = _open(store, create=True)
    try:
        counts = ingest_to_store(st, input, run_id or new_run_id("ingest"))
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from exc
    table = Table(title=f"ingest {input}", show_header=False)
    for key, value in counts.__dict__.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)


def sql_command(
    query: Annotated[
        str | None, typer.Argument(help="SQL; tables are views, `scores@v3` is version 3")
    ] = None,
    store: StoreOpt = "./factory",
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or parquet")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="read every table as of this timestamp (ISO 8601)")
    ] = None,
    limit: Annotated[int, typer.Option(help="rows shown in table format")] = 50,
) -> None:
    """Run DuckDB SQL over the store; with no query, an interactive shell on the same views."""
    import duckdb

    from storage.sql import connect

    session = connect(_open(store), as_of=as_of)
    if query is None:
        _shell(session)
        return
    try:
        rel = session.sql(query)
    except duckdb.Error as exc:
        err.print(f"[red]SQL error:[/] {exc}")
        raise typer.Exit(2) from exc
    if rel is None:
        return
    _emit(rel, format, output, limit)


def _emit(rel: Any, format: str, output: Path | None, limit: int) -> None:
    if format == "parquet":
        if output is None:
            raise typer.BadParameter("--format parquet needs --output FILE")
        rel.write_parquet(str(output))
    elif format == "csv":
        if output:
            rel.write_csv(str(output))
        else:
            _csv_stdout(rel)
    elif format == "json":
        rows = rel.to_arrow_table().to_pylist()
        text = json.dumps(rows, default=str, ensure_ascii=False, indent=1)
        (output.write_text(text) if output else print(text))
    elif format == "table":
        arrow = rel.limit(limit).to_arrow_table()
        table = Table(*arrow.column_names)
        for row in arrow.to_pylist():
            table.add_row(*(_show(v) for v in row.values()))
        console.print(table)
    else:
        raise typer.BadParameter(f"unknown format {format!r}: table, csv, json or parquet")


def _csv_stdout(rel: Any) -> None:
    import csv

    arrow = rel.to_arrow_table()
    writer = csv.writer(sys.stdout)
    writer.writerow(arrow.column_names)
    for row in arrow.to_pylist():
        writer.writerow(row.values())


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = "" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _shell(session: Any) -> None:
    """A small REPL: statements end with ';'. Ctrl-D quits."""
    import duckdb

    err.print("reflectory SQL shell: tables are views; end statements with ';', Ctrl-D to quit.")
    buffer: list[str] = []
    while True:
        try:
            line = input("sql> " if not buffer else "...> ")
        except EOFError:
            break
        buffer.append(line)
        if not line.rstrip().endswith(";"):
            continue
        query = "\n".join(buffer)
        buffer = []
        try:
            rel = session.sql(query)
            if rel is not None:
                _emit(rel, "table", None, 50)
        except duckdb.Error as exc:
            err.print(f"[red]SQL error:[/] {exc}")


@store_app.command("history")
def history_command(table: str, store: StoreOpt = "./factory") -> None:
    """Versions of a table: when, which operation, and the commit's metadata."""
    rows = _open(store).history(table)
    out = Table("version", "timestamp", "operation", "details")
    for h in rows:
        extra = {k: v for k, v in h.items() if k not in ("version", "timestamp", "operation")}
        out.add_row(
            str(h.get("version")),
            str(h.get("timestamp")),
            str(h.get("operation")),
            _show(json.dumps(extra, default=str)),
        )
    console.print(out)


@store_app.command("compact")
def compact_command(
    table: Annotated[str | None, typer.Argument(help="one table [default: every table]")] = None,
    store: StoreOpt = "./factory",
) -> None:
    """Rewrite small files into larger ones and checkpoint the log (a new version; old versions stay
    readable until a vacuum)."""
    from storage.runs import live_runs

    st = _open(store)
    if running := live_runs(st):
        err.print(f"[red]error:[/] run {', '.join(running)} is writing to this store; compact when no run is")
        raise typer.Exit(2)
    out = Table("table", "files before", "files after", "files rewritten")
    for name in [table] if table else st.tables():
        metrics = st.compact(name)
        out.add_row(name, str(metrics["files_before"]), str(metrics["files_after"]),
                    str(metrics.get("numFilesRemoved", 0)))  # fmt: skip
    console.print(out)


@store_app.command("vacuum")
def vacuum_command(
    table: str,
    store: StoreOpt = "./factory",
    retention_hours: Annotated[
        int | None, typer.Option(help="default: the table's retention (7 days)")
    ] = None,
    force: Annotated[bool, typer.Option(help="allow a retention below the table's default")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--apply", help="list files (default) or delete them")
    ] = True,
) -> None:
    """Delete files no recent version needs. Versions older than the retention can no longer be read."""
    st = _open(store)
    try:
        files = st.vacuum(table, retention_hours, force=force, dry_run=dry_run)
    except Exception as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from exc
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {len(files)} files of {table}")
    if files:
        hours = retention_hours if retention_hours is not None else 168
        state = "would break" if dry_run else "is now broken"
        err.print(f"time travel to versions older than {hours} hours {state} for {table}")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
    app.command("sql")(sql_command)
    app.add_typer(store_app, name="store")
