"""``reflectory view``: browse the store's rows in a local web app (read-only)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def view_command(
    store: Annotated[
        str, typer.Option("--store", "-s", help="local path or s3://bucket/prefix")
    ] = "./factory",
    host: Annotated[
        str, typer.Option(help="address to listen on (loopback unless --allow-remote)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free one)")] = 8765,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote", help="listen on a non-loopback --host: anyone who reaches it reads the store"
        ),
    ] = False,
    run: Annotated[
        str | None, typer.Option(help="print this run's pairs page as the address to open")
    ] = None,
) -> None:
    """Look at the rows: each pair's original beside its rewrite (a word diff), the teacher's critiques,
    every variant's IFD and r-IFD, the decision and its reason, traces, failures. Filters, search and
    sorting compose in the URL; every page has a JSON twin under /api; the current selection saves as
    JSONL or Parquet for review. Read-only: it never writes the store."""
    import socket

    import uvicorn

    from flows.view.app import create_app
    from storage.store import Store, StoreError

    if host not in LOOPBACK and not allow_remote:
        err.print(
            f"[red]error:[/] --host {host} would let anyone who reaches it read the store; "
            "add --allow-remote to mean it",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        app = create_app(Store(store))
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    if host not in LOOPBACK:
        err.print(f"[yellow]warning:[/] listening on {host}: the store is readable by anyone who reaches it")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        err.print(
            f"[red]error:[/] cannot listen on {host}:{port}: {exc.strerror}; try --port 0", soft_wrap=True
        )
        raise typer.Exit(2) from exc
    sock.listen(2048)  # before the address is printed: a client that connects at once waits, never refused
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/" + (f"runs/{run}/pairs" if run else "")
    console.print(f"Reflectory viewer of {store}: {url}  (Ctrl-C stops it)", soft_wrap=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
