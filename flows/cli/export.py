"""``reflectory export``: curate a store table and push it to the Hub (or write the Hub layout).

Options override a ``--curation-config``
JSON file (the one a dataset card prints), which overrides the defaults of ``CurationConfig``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from tasks.curate import CurationConfig

console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def export_command(
    repo: Annotated[str | None, typer.Option(help="ORG/NAME on the Hub")] = None,
    store: Annotated[
        str, typer.Option("--store", "-s", help="local path or s3://bucket/prefix")
    ] = "./factory",
    table: Annotated[str, typer.Option(help="selected or traces")] = "selected",
    version: Annotated[int | None, typer.Option(help="Delta version to read (default: latest)")] = None,
    where: Annotated[str | None, typer.Option(help='SQL filter, e.g. "ifd_ppl < 1 AND rifd_ppl < 1"')] = None,
    bound: Annotated[
        list[str] | None, typer.Option("--bound", help="COLUMN OP NUMBER, e.g. ifd_ppl<0.9 (repeatable)")
    ] = None,
    min_rating: Annotated[
        float | None,
        typer.Option(help="keep pairs the judge rated at least this (1-10; recycle with --judge)"),
    ] = None,
    top: Annotated[str | None, typer.Option(help="keep the top N rows, or a fraction: 0.1 or 10%")] = None,
    top_by: Annotated[str, typer.Option(help="score column ranked by --top")] = "ifd_ppl",
    top_group: Annotated[
        str | None, typer.Option(help="apply --top within each value of this column")
    ] = None,
    top_smallest: Annotated[bool, typer.Option(help="rank smallest first")] = False,
    require: Annotated[
        list[str] | None,
        typer.Option(help="boolean column that must be true; COL=true_or_null lets NULL pass (repeatable)"),
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", "-f", help="alpaca, messages, sharegpt or traces")
    ] = None,
    benchmarks: Annotated[str | None, typer.Option(help="folder of benchmark JSONL files")] = None,
    ngram: Annotated[int | None, typer.Option(help="decontamination n-gram size (default 13)")] = None,
    no_decontam: Annotated[bool, typer.Option("--no-decontam", help="skip decontamination")] = False,
    exact_dedup: Annotated[str | None, typer.Option(help="prompt, prompt_and_response or off")] = None,
    near_dup_threshold: Annotated[
        float | None, typer.Option(help="Jaccard threshold of near dedup (default 0.8)")
    ] = None,
    no_near_dedup: Annotated[bool, typer.Option("--no-near-dedup", help="skip near dedup")] = False,
    extra_column: Annotated[
        list[str] | None, typer.Option(help="copy this column into the export (repeatable)")
    ] = None,
    curation_config: Annotated[
        Path | None, typer.Option(help="CurationConfig as JSON (e.g. from a dataset card)")
    ] = None,
    config_name: Annotated[str, typer.Option(help="dataset config (subset) name")] = "default",
    private: Annotated[bool, typer.Option(help="create the repo as private")] = False,
    split_test: Annotated[float, typer.Option(help="fraction of rows in a test split (0: none)")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of the split")] = 0,
    to_dir: Annotated[
        Path | None, typer.Option(help="write the Hub layout to this folder instead of pushing")
    ] = None,
    license: Annotated[str, typer.Option(help="license id for the card")] = "other",
    pretty_name: Annotated[str | None, typer.Option(help="title of the dataset card")] = None,
) -> None:
    """Curate a table version (filters, top-k, dedup, decontamination) and export it with a dataset card."""
    from pydantic import ValidationError

    from storage.hub_export import ExportError, ExportParams, run_export
    from storage.store import StoreError

    try:
        curation = build_curation(
            curation_config, where=where, bound=bound, min_rating=min_rating, top=top, top_by=top_by,
            top_group=top_group, top_smallest=top_smallest, require=require, format=format,
            benchmarks=benchmarks, ngram=ngram,
            no_decontam=no_decontam, exact_dedup=exact_dedup, near_dup_threshold=near_dup_threshold,
            no_near_dedup=no_near_dedup, extra_column=extra_column,
        )  # fmt: skip
        params = ExportParams(
            store=store, table=table, version=version, repo=repo, to_dir=str(to_dir) if to_dir else None,
            config_name=config_name, private=private, split_test=split_test, seed=seed, license=license,
            pretty_name=pretty_name, curation=curation,
        )  # fmt: skip
        result = run_export(params)
    except ValidationError as exc:
        err.print(f"[red]error:[/] {_validation_message(exc)}")
        raise typer.Exit(2) from exc
    except (ExportError, StoreError, ValueError, FileNotFoundError, OSError) as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from exc
    _summary(result)


def build_curation(
    path: Path | None = None,
    *,
    where: str | None = None,
    bound: list[str] | None = None,
    min_rating: float | None = None,
    top: str | None = None,
    top_by: str = "ifd_ppl",
    top_group: str | None = None,
    top_smallest: bool = False,
    require: list[str] | None = None,
    format: str | None = None,
    benchmarks: str | None = None,
    ngram: int | None = None,
    no_decontam: bool = False,
    exact_dedup: str | None = None,
    near_dup_threshold: float | None = None,
    no_near_dedup: bool = False,
    extra_column: list[str] | None = None,
) -> CurationConfig:
    """A ``CurationConfig`` from a JSON file (optional) with the command-line options on top."""
    from tasks.curate import BoundSpec, CurationConfig, TopSpec

    base: dict[str, Any] = json.loads(path.read_text()) if path else {}
    config = CurationConfig.model_validate(base)
    update: dict[str, Any] = {}
    if where is not None:
        update["where"] = where
    if bound:
        update["bounds"] = [BoundSpec.parse(b) for b in bound]
    if min_rating is not None:
        update["min_rating"] = min_rating
    if top is not None:
        update["top"] = TopSpec.parse(
            top,
            by=top_by,
            group_by=top_group,
            largest=not top_smallest,
        )
    if require:
        rules = {}
        for item in require:
            col, _, rule = item.partition("=")
            rules[col.strip()] = rule.strip() or "true"
        update["require"] = rules
    if format is not None:
        update["format"] = format
    if extra_column:
        update["extra_columns"] = list(extra_column)
    decontam = config.decontam.model_dump()
    if benchmarks is not None:
        decontam["benchmarks_dir"] = benchmarks
    if ngram is not None:
        decontam["ngram"] = ngram
    if no_decontam:
        decontam["enabled"] = False
    exact = config.exact_dedup.model_dump()
    if exact_dedup is not None:
        exact.update(enabled=exact_dedup != "off")
        if exact_dedup != "off":
            exact["on"] = exact_dedup
    near = config.near_dedup.model_dump()
    if near_dup_threshold is not None:
        near["threshold"] = near_dup_threshold
    if no_near_dedup:
        near["enabled"] = False
    # Validate the merged config as a whole, so every bad value gets pydantic's message.
    return CurationConfig.model_validate(
        config.model_dump() | update | {"decontam": decontam, "exact_dedup": exact, "near_dedup": near}
    )


def _validation_message(exc: Any) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors())


def _summary(result: Any) -> None:
    table = Table(title=f"reflectory export -> {result.destination}")
    table.add_column("step")
    table.add_column("rows in", justify="right")
    table.add_column("removed", justify="right")
    table.add_column("rule")
    for r in result.curation.reports:
        table.add_row(r.name, str(r.rows_in), str(r.removed), r.reason)
    console.print(table)
    for r in result.curation.reports:
        if r.name == "decontamination":
            per = ", ".join(f"{k} {v['rows_overlapping']}" for k, v in r.details["benchmarks"].items())
            console.print(f"benchmark overlaps (rows removed): {per}")
    for note in result.curation.skipped:
        console.print(f"[yellow]not applied:[/] {note}")
    splits = ", ".join(f"{n} {s}" for s, n in result.split_rows.items())
    console.print(
        f"exported {splits} rows to {result.destination}" + (f" ({result.commit})" if result.commit else "")
    )
