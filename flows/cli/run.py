"""``reflectory run recycle|traces``: factory flows from the command line (Prefect without a server).

Parameters come from the flow's model (``flows.params``), filled from ``--config`` (JSON or YAML)
and then from the flags that were given: a flag left out never overrides the file.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)
run_app = typer.Typer(no_args_is_help=True, help="Run a factory flow end to end.")


# Flag names that are not fields of the flow's parameters: merge_flags maps them onto the fields.
FLAG_NAMES = (
    "teacher_options", "student_options", "teacher_replicas", "student_replicas",
    "teacher_prices", "student_prices", "max_tokens", "temperature", "repetition_penalty",
)  # fmt: skip


def merge_flags(base: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """The config file's parameters with the given flags on top (a flag that is None was not given).

    ``flags`` uses the command's names: ``teacher``/``student`` (specs), ``teacher_options`` and
    ``student_options`` (merged key by key into the file's options), ``teacher_replicas`` and
    ``student_replicas``, ``max_tokens``, ``temperature`` and ``repetition_penalty`` (sampling), and
    top-level fields. The file may use the same names (``max_tokens: 8``, ``teacher: hf:MODEL``).
    """
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items() if k not in FLAG_NAMES}
    if file_flags := {k: v for k, v in base.items() if k in FLAG_NAMES}:
        out = merge_flags(out, file_flags)
    for role in ("teacher", "student"):
        model = out.get(role) or {}
        model = {"spec": model} if isinstance(model, str) else dict(model)
        if (spec := flags.pop(role, None)) is not None:
            model["spec"] = spec
        if (options := flags.pop(f"{role}_options", None)) is not None:
            model["options"] = {**(model.get("options") or {}), **options}
        if (replicas := flags.pop(f"{role}_replicas", None)) is not None:
            model["replicas"] = replicas
        if (prices := flags.pop(f"{role}_prices", None)) is not None:
            model["prices"] = {**(model.get("prices") or {}), **prices}
        if model:
            out[role] = model
    if (judge := flags.pop("judge", None)) is not None:  # the spec; the file may hold the rest
        cfg = out.get("judge") or {}
        cfg = {"model": cfg} if isinstance(cfg, str) else dict(cfg)
        model = cfg.get("model") or {}
        cfg["model"] = {**({"spec": model} if isinstance(model, str) else model), "spec": judge}
        out["judge"] = cfg
    sampling = dict(out.get("sampling") or {})
    for key in ("max_tokens", "temperature", "repetition_penalty"):
        if (value := flags.pop(key, None)) is not None:
            sampling[key] = value
    if sampling:
        out["sampling"] = sampling
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


def parse_prices(items: list[str]) -> dict[str, float]:
    """``input=0.15 output=0.6`` or ``device_hour=2.5`` as a prices mapping (checked by the params model)."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"price {item!r} is not KEY=VALUE (keys: input, output, device_hour)")
        try:
            out[key.strip().replace("-", "_")] = float(value)
        except ValueError:
            raise ValueError(f"price {item!r}: {value!r} is not a number") from None
    return out


def _run_command(name: str, params_model: str, doc: str) -> Callable[..., None]:
    """One ``reflectory run NAME`` command per flow: the same options, the flow's params model."""

    def command(
        input: Annotated[
            str | None, typer.Option("--input", "-i", help="file, folder or Hugging Face dataset")
        ] = None,
        store: Annotated[
            str | None,
            typer.Option("--store", "-s", help="local folder or s3://bucket/prefix [default: ./factory]"),
        ] = None,
        teacher: Annotated[
            str | None, typer.Option(help="engine spec of the teacher [default: vllm:smollm2]")
        ] = None,
        student: Annotated[
            str | None, typer.Option(help="engine spec of the student [default: vllm:smollm2]")
        ] = None,
        teacher_option: Annotated[
            list[str] | None, typer.Option("--teacher-option", "-T", help="teacher engine option KEY=VALUE")
        ] = None,
        student_option: Annotated[
            list[str] | None, typer.Option("--student-option", "-S", help="student engine option KEY=VALUE")
        ] = None,
        teacher_replicas: Annotated[int | None, typer.Option(help="teacher replicas [default: 1]")] = None,
        teacher_price: Annotated[
            list[str] | None,
            typer.Option(help="teacher price KEY=VALUE: input, output ($ per 1M tokens) or device_hour ($)"),
        ] = None,
        student_price: Annotated[
            list[str] | None, typer.Option(help="student price KEY=VALUE (as --teacher-price)")
        ] = None,
        student_replicas: Annotated[int | None, typer.Option(help="student replicas [default: 1]")] = None,
        run_id: Annotated[
            str | None, typer.Option(help="reuse to resume: only missing shards are computed")
        ] = None,
        shard_size: Annotated[int | None, typer.Option(help="pairs per shard [default: 64]")] = None,
        limit: Annotated[int | None, typer.Option(help="only the first N rows")] = None,
        max_tokens: Annotated[
            int | None, typer.Option(help="teacher tokens per reply [default: 512]")
        ] = None,
        temperature: Annotated[float | None, typer.Option(help="teacher temperature [default: 0.7]")] = None,
        repetition_penalty: Annotated[
            float | None, typer.Option(help="above 1 discourages repeating tokens [default: 1.0]")
        ] = None,
        free_text: Annotated[
            bool | None,
            typer.Option(
                "--free-text/--constrained", help="free-text teacher replies instead of constrained forms"
            ),
        ] = None,
        judge: Annotated[
            str | None,
            typer.Option(help="recycle: a judge's engine spec adds the judge stage (off by default)"),
        ] = None,
        ray_address: Annotated[
            str | None,
            typer.Option(
                help="'auto' or ray://host:10001; 'local': a Ray of this run's own; default: the head "
                "`ray start --head` runs here, else a local Ray"
            ),
        ] = None,
        offline: Annotated[
            bool | None,
            typer.Option("--offline/--online", help="never contact the Hub (also HF_HUB_OFFLINE=1)"),
        ] = None,
        max_cost: Annotated[
            float | None,
            typer.Option(
                help="dollars the teacher may spend in this run, at --teacher-price (its -T max_cost)"
            ),
        ] = None,
        compact: Annotated[
            bool | None,
            typer.Option(
                "--compact/--no-compact", help="compact the tables the run wrote, at its end [default: on]"
            ),
        ] = None,
        fresh_replies: Annotated[
            bool | None,
            typer.Option(
                "--fresh-replies/--reuse-replies",
                help="ask the models again instead of reusing replies stored by earlier runs",
            ),
        ] = None,
        config: Annotated[
            Path | None, typer.Option(help="JSON or YAML file with the flow's parameters (flags override it)")
        ] = None,
    ) -> None:
        from flows.cli.env import prefect_defaults

        prefect_defaults()
        import flows.params
        from flows.config_files import read_config
        from infra.engines.spec import parse_options
        from tasks.engine import EngineError

        try:
            base: dict[str, Any] = read_config(config) if config else {}
            flags = {
                "input": input, "store": store, "teacher": teacher, "student": student,
                "teacher_options": {**parse_options(teacher_option or []),
                                    **({"max_cost": max_cost} if max_cost is not None else {})} or None,
                "student_options": parse_options(student_option) if student_option else None,
                "teacher_replicas": teacher_replicas, "student_replicas": student_replicas,
                "teacher_prices": parse_prices(teacher_price) if teacher_price else None,
                "student_prices": parse_prices(student_price) if student_price else None,
                "run_id": run_id, "shard_size": shard_size, "limit": limit, "max_tokens": max_tokens,
                "temperature": temperature, "repetition_penalty": repetition_penalty,
                "constrained": None if free_text is None else not free_text,
                "ray_address": ray_address, "offline": offline, "judge": judge,
                "fresh_replies": fresh_replies, "compact": compact,
            }  # fmt: skip
            merged = merge_flags(base, flags)
        except (ValueError, EngineError) as exc:
            err.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
            raise typer.Exit(2) from exc
        try:
            params = getattr(flows.params, params_model)(**merged)
        except Exception as exc:
            err.print(f"[red]bad parameters:[/] {exc}")
            raise typer.Exit(2) from exc
        from flows.cli.interrupts import cancellable

        summary = cancellable(lambda: run_flow(name, params))
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
    from flows.prefect_api import PrefectAPIError
    from flows.preflight import preflight
    from flows.recycle import recycle_flow
    from flows.traces import traces_flow
    from infra.cluster import ClusterError
    from infra.pool import PoolError
    from storage.hub_export import ExportError
    from storage.store import StoreError
    from tasks.engine import EngineError

    flows: dict[str, Callable[[Any], Any]] = {"recycle": recycle_flow, "traces": traces_flow}
    try:
        preflight(params, note=lambda line: err.print(f"[yellow]note:[/] {line}"))
        warm_up(params)
        return dict(flows[name](params))
    except (
        EngineError,
        ClusterError,
        StoreError,
        PoolError,
        ExportError,
        PrefectAPIError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from exc


def warm_up(params: Any) -> None:
    """Start Prefect's API, Ray and the teacher's and student's replicas before the flow."""
    judge = getattr(params, "judge", None)  # recycle's optional judge stage
    roles = [params.teacher, params.student, *([judge.model] if judge else [])]
    roles = [r for r in roles if not r.batched()]  # a Batch API role has no replicas
    start_services(params.ray_address, params.offline, roles)


def start_services(ray_address: str | None, offline: bool, roles: Sequence[Any]) -> None:
    """Start Prefect's API, Ray and the model replicas at once, before the flow: on a small machine
    each takes seconds, and the flow then finds all three running in this process. Ray must start
    in the main thread, so Prefect's API starts in another (``flows.prefect_api``: the configured
    server, else Prefect's temporary local API)."""
    from flows.prefect_api import ensure_api
    from infra.cluster import connect, where
    from infra.models import go_offline
    from infra.pool import start_pool

    if offline:
        go_offline()  # before Ray starts
    _STARTED.set()
    failed: list[BaseException] = []

    def start_api() -> None:
        try:
            ensure_api()
        except BaseException as exc:  # re-raised in the main thread, as the command's one-line error
            failed.append(exc)

    prefect = threading.Thread(target=start_api, name="prefect-api-start", daemon=True)
    prefect.start()
    connect(ray_address)
    err.print(f"[dim]{where()}[/]")
    for role in roles:
        start_pool(role)
    prefect.join()
    if failed:
        raise failed[0]


_STARTED = threading.Event()


def services_started() -> bool:
    """Whether a command of this process started Prefect's API, Ray or replicas (``start_services``)."""
    return _STARTED.is_set()


def exit_now(code: int = 0) -> None:
    """End the command without waiting on teardown that the process exit does anyway.

    What must not be lost is handed over first: Prefect's queued states and logs, this command's
    output, and Ray's own processes (a local Ray is stopped; a cluster is only left)."""
    from flows.prefect_api import finish
    from infra.cluster import shutdown

    finish()
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _print_summary(name: str, summary: dict[str, Any], store: str) -> None:
    from tasks.cost import format_cost

    table = Table(title=f"{name} run {summary['run_id']}", show_header=False)
    for key in ("pairs", "questions", "shards", "resumed_shards", "valid", "verified", "kept"):
        if key in summary:
            table.add_row(key.replace("_", " "), str(summary[key]))
    if conversations := summary.get("conversations"):  # of the pairs: last exchanges after a history
        table.add_row("conversations", f"{conversations} (last exchange recycled after its history)")
    for reason, n in sorted(summary["reasons"].items()):
        table.add_row(f"  {reason}", str(n))
    if summary.get("window"):  # what the flow held: shards in flight at most, its peak memory
        table.add_row(
            "shards in flight",
            f"{summary.get('in_flight_max', 0)} at most (window {summary['window']}); "
            f"flow process peak {summary.get('peak_rss_mb', 0):,} MB",
        )
    if compacted := summary.get("compacted"):
        files = sum(before for before, _ in compacted.values()), sum(after for _, after in compacted.values())
        table.add_row("compacted", f"{len(compacted)} tables, {files[0]:,} files to {files[1]:,}")
    for cause, n in (summary.get("failures") or {}).items():  # requests that failed alone: one line each
        table.add_row(f"failed {cause}", str(n))
    for stage, occ in (summary.get("occupancy") or {}).items():
        table.add_row(
            f"occupancy {stage}",
            f"{occ['occupancy']:.2f} (idle {occ['idle_seconds']:.1f} s while work waited)",
        )
    if judged := summary.get("judge"):
        score = "n/a" if judged["winning_score"] is None else f"{judged['winning_score']:.3f}"
        table.add_row(
            "judge: reflected vs original",
            f"{judged['wins']} wins, {judged['ties']} ties, {judged['losses']} losses, "
            f"{judged['failed']} failed (winning score {score})",
        )
        if judged["mean_rating"] is not None:
            table.add_row(
                "judge: kept pairs' rating", f"{judged['mean_rating']:.2f} / 10 over {judged['rated']}"
            )
    for spec, limits in (summary.get("limits") or {}).items():
        waited = ", ".join(f"{s:.1f} s on {k}" for k, s in limits.get("waited_s", {}).items() if s) or "none"
        throttled = sum(limits.get("throttled", {}).values())
        table.add_row(f"limits {spec.split('@')[0]}", f"waited {waited}; {throttled} x 429")
    nodes = summary.get("nodes") or {}
    if len(nodes) > 1:  # on a cluster: where the shards ran
        for node, n in sorted(nodes.items()):
            table.add_row(f"node {node[:12]}", f"{n} shards")
    cost = summary.get("cost") or {}
    table.add_row("device-hours", f"{cost.get('device_hours', 0.0):.5f}")
    if cost.get("total") is not None:  # no prices given: no cost shown, never an invented one
        table.add_row("cost", format_cost(cost["total"]))
        table.add_row("cost per kept pair", format_cost(cost.get("per_kept_pair")))
    if cost.get("reused"):
        saved = f" (saved {format_cost(cost['saved'])})" if cost.get("saved") is not None else ""
        table.add_row("replies reused", f"{cost['reused']} of {cost['reused'] + cost['requests']}{saved}")
    console.print(table)
    if summary.get("status") == "stopped":
        err.print(f"[yellow]stopped:[/] {summary['cause']}", soft_wrap=True)
    if summary.get("report"):
        console.print(f"Report: {summary['report']}", soft_wrap=True)  # a path stays one line
    console.print("Look at the results with SQL, for example:")
    query = {
        "recycle": "SELECT variant, reason, round(ifd_ppl, 3) AS ifd, round(rifd_ppl, 3) AS rifd, "
        "left(instruction, 40) AS instruction FROM selected",
        "traces": "SELECT reason, verified, n_reflections, round(ifd_ppl, 3) AS ifd, "
        "left(question, 40) AS question FROM traces",
    }[name]
    console.print(f"  reflectory sql --store {store} \"{query} WHERE run_id = '{summary['run_id']}'\"")
