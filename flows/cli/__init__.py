"""The ``reflectory`` command line: one module per command group, each a thin layer over flows and stores."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Reflectory: a data factory for instruction tuning."
)


@app.callback()
def main() -> None:
    """Recycle instruction data with Selective Reflection-Tuning and generate verified reflection traces."""


def _register() -> None:
    from flows.cli import export, serve, store
    from flows.cli.compare import compare_command
    from flows.cli.evaluate import evaluate_command
    from flows.cli.reflect import reflect_command
    from flows.cli.report import report_command
    from flows.cli.run import run_app
    from flows.cli.runs import runs_command
    from flows.cli.score import score_command
    from flows.cli.train import train_command
    from flows.cli.view import view_command

    app.command("score")(score_command)
    app.command("reflect")(reflect_command)
    app.command("report")(report_command)
    app.command("view")(view_command)
    app.command("compare")(compare_command)
    app.command("train")(train_command)
    run_app.command("evaluate")(evaluate_command)
    app.add_typer(run_app, name="run")
    app.command("runs")(runs_command)
    store.register(app)
    export.register(app)
    serve.register(app)


_register()


def entry(args: list[str] | None = None) -> None:
    """The ``reflectory`` command: the app, then, where a command started Ray or Prefect's temporary
    API, an exit that does not wait on their teardown (``flows.cli.run.exit_now``). The commands
    themselves return, so tests run them in-process (``typer.testing.CliRunner``)."""
    try:
        app(args, prog_name="reflectory")
        code: int = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    from flows.cli.run import exit_now, services_started

    if services_started():
        exit_now(code)
    raise SystemExit(code)
