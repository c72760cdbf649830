"""``reflectory compare``: the papers' pairwise evaluation of two models' answers by a judge.

It prints wins, ties, losses, failed items and the winning score per test set and in total
(``--json``: one JSON object, the total under ``total``), and writes the papers' stacked-bar plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


def compare_command(
    answers_a: Annotated[
        str | None, typer.Option("--answers-a", help="JSONL of A's answers: question and 'output' per row")
    ] = None,
    answers_b: Annotated[
        str | None, typer.Option("--answers-b", help="JSONL of B's answers, paired with A's by position")
    ] = None,
    model_a: Annotated[
        str | None, typer.Option("--model-a", help="generate A's answers with this engine spec")
    ] = None,
    model_b: Annotated[
        str | None, typer.Option("--model-b", help="generate B's answers with this engine spec")
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(help="the judge's engine spec, e.g. openai:gpt-4o@URL [default: vllm:smollm2]"),
    ] = None,
    judge_option: Annotated[
        list[str] | None, typer.Option("--judge-option", "-J", help="judge engine option KEY=VALUE")
    ] = None,
    model_option: Annotated[
        list[str] | None, typer.Option("--model-option", "-M", help="engine option KEY=VALUE of both models")
    ] = None,
    test_sets: Annotated[
        str | None, typer.Option(help="comma-separated [default: vicuna,koala,wizardlm,sinstruct,lima]")
    ] = None,
    test_sets_dir: Annotated[
        str | None, typer.Option(help="folder of the test set files [default: data/benchmarks]")
    ] = None,
    judge_price: Annotated[
        list[str] | None,
        typer.Option(help="judge price KEY=VALUE: input, output ($ per 1M tokens) or device_hour ($)"),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N questions of each test set")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="tokens per generated answer [default: 512]")] = None,
    judge_max_tokens: Annotated[
        int | None, typer.Option(help="tokens per judge reply [default: 256, the reference's]")
    ] = None,
    free_text: Annotated[
        bool | None,
        typer.Option("--free-text/--constrained", help="judge replies unconstrained (the reference's way)"),
    ] = None,
    store: Annotated[str | None, typer.Option("--store", "-s", help="[default: ./factory]")] = None,
    run_id: Annotated[
        str | None, typer.Option(help="reuse to resume: only missing shards are computed")
    ] = None,
    shard_size: Annotated[int | None, typer.Option(help="items per shard [default: 64]")] = None,
    plot: Annotated[
        str | None, typer.Option(help="where the plot goes [default: STORE/reports/RUN.png]")
    ] = None,
    ray_address: Annotated[str | None, typer.Option(help="as for reflectory run")] = None,
    offline: Annotated[bool | None, typer.Option("--offline/--online", help="never contact the Hub")] = None,
    fresh_replies: Annotated[
        bool | None,
        typer.Option(
            "--fresh-replies/--reuse-replies", help="ask the models and the judge again [default: reuse]"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")] = False,
    config: Annotated[
        Path | None, typer.Option(help="JSON or YAML file with the parameters (flags override it)")
    ] = None,
) -> None:
    """Judge A's answers against B's on the papers' test sets, both orders, by the reference protocol."""
    from flows.cli.env import prefect_defaults

    prefect_defaults()
    from flows.cli.run import parse_prices
    from flows.config_files import read_config
    from flows.params import CompareParams
    from infra.engines.spec import parse_options
    from tasks.engine import EngineError

    try:
        merged: dict[str, Any] = read_config(config) if config else {}
        judge_cfg = merged.get("judge") or {}
        judge_cfg = {"model": judge_cfg} if isinstance(judge_cfg, str) else dict(judge_cfg)
        model = judge_cfg.get("model") or {}
        model = {"spec": model} if isinstance(model, str) else dict(model)
        if judge:
            model["spec"] = judge
        if judge_option:
            model["options"] = {**(model.get("options") or {}), **parse_options(judge_option)}
        if judge_price:
            model["prices"] = {**(model.get("prices") or {}), **parse_prices(judge_price)}
        if model:
            judge_cfg["model"] = model
        if judge_max_tokens is not None:
            judge_cfg["sampling"] = {**_judge_sampling(), **(judge_cfg.get("sampling") or {}),
                                     "max_tokens": judge_max_tokens}  # fmt: skip
        if free_text is not None:
            judge_cfg["constrained"] = not free_text
        merged["judge"] = judge_cfg
        options = parse_options(model_option) if model_option else None
        for side, spec in (("a", model_a), ("b", model_b)):
            if spec is not None:
                merged[f"model_{side}"] = {"spec": spec, **({"options": options} if options else {})}
        if max_tokens is not None:
            merged["answer_sampling"] = {**(merged.get("answer_sampling") or {}), "max_tokens": max_tokens}
        flags = {
            "answers_a": answers_a, "answers_b": answers_b, "test_sets_dir": test_sets_dir, "limit": limit,
            "store": store, "run_id": run_id, "shard_size": shard_size, "plot": plot,
            "ray_address": ray_address, "offline": offline, "fresh_replies": fresh_replies,
            "test_sets": [s.strip() for s in test_sets.split(",") if s.strip()] if test_sets else None,
        }  # fmt: skip
        merged.update({k: v for k, v in flags.items() if v is not None})
    except (ValueError, EngineError) as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    try:
        params = CompareParams(**merged)
    except Exception as exc:
        err.print(f"[red]bad parameters:[/] {exc}")
        raise typer.Exit(2) from exc
    from flows.cli.interrupts import cancellable

    summary = cancellable(lambda: run_compare(params))
    if as_json:
        print(json.dumps(_json_summary(summary)), flush=True)
    else:
        _print(summary)


def _judge_sampling() -> dict[str, Any]:
    from tasks.judge.protocol import JUDGE_SAMPLING

    return JUDGE_SAMPLING.model_dump()


def run_compare(params: Any) -> dict[str, Any]:
    """Check, warm up and run the compare flow; a user's mistake is one line and exit 2."""
    from flows.cli.run import start_services
    from flows.compare import compare_flow, compare_items
    from flows.prefect_api import PrefectAPIError
    from flows.preflight import check_roles, check_store_and_ray
    from infra.cluster import ClusterError
    from infra.pool import PoolError
    from storage.store import StoreError
    from tasks.engine import EngineError

    try:
        compare_items(params)  # a bad answer file is one line now, before Ray and the models start
        check_roles(params.roles(), params.offline, note=lambda line: err.print(f"[yellow]note:[/] {line}"))
        check_store_and_ray(params.store, params.ray_address)
        start_services(params.ray_address, params.offline, [role for _, role in params.roles()])
        return dict(compare_flow(params))
    except (
        EngineError,
        ClusterError,
        StoreError,
        PoolError,
        PrefectAPIError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _json_summary(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "judge", "judge_prompt_version", "a", "b", "items", "test_sets", "total",
            "winning_score_ci", "plot")  # fmt: skip
    return {k: summary[k] for k in keys if k in summary}


def _print(summary: dict[str, Any]) -> None:
    table = Table(title=f"compare run {summary['run_id']}: A={summary['a']}  B={summary['b']}")
    for column in ("test set", "A wins", "ties", "B wins", "failed", "winning score"):
        table.add_column(column, justify="left" if column == "test set" else "right")
    rows = [*summary["test_sets"].items(), ("total", summary["total"])]
    for name, t in rows:
        score = "n/a" if t["winning_score"] is None else f"{t['winning_score']:.3f}"
        table.add_row(name, str(t["wins"]), str(t["ties"]), str(t["losses"]), str(t["failed"]), score,
                      style="bold" if name == "total" else None)  # fmt: skip
    console.print(table)
    console.print(
        f"judge {summary['judge']} ({summary['judge_prompt_version']}); winning score = "
        "(A wins - B wins) / judged items + 1, failed items left out"
    )
    if summary.get("plot"):
        console.print(f"Plot: {summary['plot']}", soft_wrap=True)
    console.print("The verdicts, with both replies of the judge:")
    console.print(
        f'  reflectory sql --store {summary.get("store", "<store>")} "SELECT test_set, outcome, '
        f"reply_a_first, reply_b_first FROM comparisons WHERE run_id = '{summary['run_id']}'\"",
        soft_wrap=True,
    )
