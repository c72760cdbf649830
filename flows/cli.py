"""The ``reflectory`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Reflectory: a data factory for instruction tuning."
)


@app.callback()
def main() -> None:
    """Recycle instruction data with Selective Reflection-Tuning and generate verified reflection traces."""


def _register() -> None:
    from flows import export_cli, serve_cli, store_cli
    from flows.reflect_cli import reflect_command
    from flows.run_cli import run_app
    from flows.score_cli import score_command

    app.command("score")(score_command)
    app.command("reflect")(reflect_command)
    app.add_typer(run_app, name="run")
    store_cli.register(app)
    export_cli.register(app)
    serve_cli.register(app)


_register()


if __name__ == "__main__":
    app()
