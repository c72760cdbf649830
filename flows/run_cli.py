"""``reflectory run recycle|traces``: factory flows from the command line (Prefect without a server)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)
run_app = typer.Typer(no_args_is_help=True, help="Run a factory flow end to end.")


def prefect_defaults() -> None:
    """Settings that make a serverless Prefect run work on small machines (DESIGN.md section 5)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Before torch loads here or in a Ray replica (they inherit this environment): spinning idle
    # OpenMP threads made CPU decoding several times slower on a busy machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _run_command(name: str, params_model: str, doc: str) -> Callable[..., None]:
    """One ``reflectory run NAME`` command per flow: the same options, the flow's params model."""

    def command(
        input: Annotated[
            str, typer.Option("--input", "-i", help="file, folder or Hugging Face dataset")
        ] = "",
        store: Annotated[str, typer.Option("--store", "-s")] = "./factory",
        teacher: Annotated[str, typer.Option(help="engine spec of the teacher")] = "hf:smollm2",
        student: Annotated[str, typer.Option(help="engine spec of the student")] = "hf:smollm2",
        teacher_option: Annotated[
            list[str] | None, typer.Option("--teacher-option", "-T", help="KEY=VALUE")
        ] = None,
        student_option: Annotated[
            list[str] | None, typer.Option("--student-option", "-S", help="KEY=VALUE")
        ] = None,
        teacher_replicas: Annotated[int, typer.Option()] = 1,
        student_replicas: Annotated[int, typer.Option()] = 1,
        run_id: Annotated[
            str | None, typer.Option(help="reuse to resume: only missing shards are computed")
        ] = None,
        shard_size: Annotated[int, typer.Option()] = 64,
        limit: Annotated[int | None, typer.Option(help="only the first N rows")] = None,
        max_tokens: Annotated[int, typer.Option(help="teacher tokens per reply")] = 512,
        ray_address: Annotated[
            str | None, typer.Option(help="'auto' or ray://host:10001; default: local Ray")
        ] = None,
        config: Annotated[
            Path | None, typer.Option(help="JSON or YAML file with the flow's parameters (flags override it)")
        ] = None,
    ) -> None:
        prefect_defaults()
        import flows.params
        from flows.config_files import read_config
        from infra.engines.spec import parse_options

        try:
            base: dict[str, Any] = read_config(config) if config else {}
        except ValueError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from exc
        base.setdefault("teacher", {})
        base.setdefault("student", {})
        if input:
            base["input"] = input
        base.update(store=store, shard_size=shard_size, limit=limit, ray_address=ray_address, run_id=run_id)
        base["teacher"].update(spec=teacher, options=parse_options(teacher_option), replicas=teacher_replicas)
        base["student"].update(spec=student, options=parse_options(student_option), replicas=student_replicas)
        base.setdefault("sampling", {})["max_tokens"] = max_tokens
        try:
            params = getattr(flows.params, params_model)(**base)
        except Exception as exc:
            err.print(f"[red]bad parameters:[/] {exc}")
            raise typer.Exit(2) from exc
        summary = run_flow(name, params)
        _print_summary(name, summary, params.store)

    command.__doc__ = doc
    return command


run_app.command("recycle")(
    _run_command(
        "recycle", "RecycleParams", "Selective Reflection-Tuning end to end: ingest, reflect, score, select."
    )
)
run_app.command("traces")(
    _run_command(
        "traces",
        "TracesParams",
        "Reflection traces end to end: ingest questions, generate, validate and verify, score.",
    )
)


def run_flow(name: str, params: Any) -> dict[str, Any]:
    """Run a flow, turning the usual user errors into one clear line instead of a traceback."""
    from flows.preflight import preflight
    from flows.recycle import recycle_flow
    from flows.traces import traces_flow
    from infra.cluster import ClusterError
    from infra.engines.base import EngineError
    from infra.pool import PoolError
    from storage.hub_export import ExportError
    from storage.store import StoreError

    flows: dict[str, Callable[[Any], Any]] = {"recycle": recycle_flow, "traces": traces_flow}
    try:
        preflight(params)
        return dict(flows[name](params))
    except (
        EngineError,
        ClusterError,
        StoreError,
        PoolError,
        ExportError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _print_summary(name: str, summary: dict[str, Any], store: str) -> None:
    table = Table(title=f"{name} run {summary['run_id']}", show_header=False)
    for key in ("pairs", "questions", "shards", "valid", "verified", "kept"):
        if key in summary:
            table.add_row(key, str(summary[key]))
    for reason, n in sorted(summary["reasons"].items()):
        table.add_row(f"  {reason}", str(n))
    console.print(table)
    console.print("Look at the results with SQL, for example:")
    query = {
        "recycle": "SELECT variant, reason, round(ifd_ppl, 3) AS ifd, round(rifd_ppl, 3) AS rifd, "
        "left(instruction, 40) AS instruction FROM selected",
        "traces": "SELECT reason, verified, n_reflections, round(ifd_ppl, 3) AS ifd, "
        "left(question, 40) AS question FROM traces",
    }[name]
    console.print(f"  reflectory sql --store {store} \"{query} WHERE run_id = '{summary['run_id']}'\"")
