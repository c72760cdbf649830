"""``reflectory serve``: register the factory's deployments with their schedules, and run them.

A serve process is the simplest way to get scheduled runs and runs triggered from the Prefect UI:
it polls the API for runs of its deployments and executes them in subprocesses. Schedules a user
sets in the UI are replaced by the file's on the next ``serve``; for schedules that live in the UI,
deploy ``infra/prefect.yaml`` to a work pool and start a worker (README, "Scheduling").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML or JSON with the deployments")] = Path(
        "infra/deployments.yaml"
    ),
    check: Annotated[
        bool, typer.Option("--check", help="validate and list the deployments; serve nothing")
    ] = False,
) -> None:
    """Serve the deployments of a config file: schedules run them, and so can the Prefect UI."""
    from flows.cli.env import prefect_defaults
    from flows.config_files import read_config
    from flows.deployments import DeploymentError, load_serve_config

    prefect_defaults()
    try:
        serve_config = load_serve_config(read_config(config))
    except (DeploymentError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from exc

    table = Table(title=f"deployments in {config}")
    for column in ("deployment", "schedule", "parameters"):
        table.add_column(column)
    for d in serve_config.deployments:
        paused = " (paused)" if d.paused else ""
        table.add_row(f"{d.flow}/{d.name}", d.schedule_text + paused, ", ".join(sorted(d.parameters)) or "-")
    console.print(table)
    if check:
        return

    from prefect import serve
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    from flows.deployments import to_deployments

    api = PREFECT_API_URL.value()
    if not api:
        err.print(
            "[red]error:[/] no Prefect API to register with: start one (`prefect server start`) and "
            "point at it (`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`)"
        )
        raise typer.Exit(2)
    ui = PREFECT_UI_URL.value() or api.removesuffix("/api")
    first = serve_config.deployments[0]
    console.print(f"Serving against {api}. Open {ui}/deployments to run one with a form, or:")
    console.print(f"  prefect deployment run '{first.flow}/{first.name}'")
    serve(*to_deployments(serve_config), limit=serve_config.limit, print_starting_message=False)
