"""``reflectory`` commands run in this test process, as a user types them (typer's ``CliRunner``).

In-process runs share one Ray and one Prefect temporary API per test process (an xdist worker):
the first run starts them and later runs find them, instead of every run paying about 20 CPU-seconds
to start and stop its own (``docs/development.md``). The commands return instead of ending the
process (``flows.cli.entry`` does that for the real command). Tests that kill a run, need a Ray or
Prefect of their own, or check what a fresh process does, still run ``python -m flows.cli``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environment(cwd: Path | None, env: dict[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    here = Path.cwd()
    try:
        if env:
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        if cwd is not None:
            os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)


def reflectory(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Run ``reflectory ARGS`` in this process; its exit code, stdout and stderr. A run on a local
    Ray joins the one this process has (``--ray-address local`` unless the arguments name one)."""
    from flows.cli import app

    argv = list(args)
    if argv[:1] in (["run"], ["compare"]) and "--ray-address" not in argv:
        argv += ["--ray-address", "local"]
    runner = CliRunner()
    with _environment(cwd, {"COLUMNS": "200", **(env or {})}):
        result = runner.invoke(app, argv, prog_name="reflectory")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)
