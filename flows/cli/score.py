"""``reflectory score``: IFD and r-IFD for every pair of a file, with a student engine."""

from __future__ import annotations

import math
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


class TurnsOption(StrEnum):
    last = "last"
    each = "each"


def score_command(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="JSONL, JSON or Parquet: Alpaca or prompt/response")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write")],
    student: Annotated[
        str, typer.Option(help="engine spec: hf:PATH, vllm:PATH, openai:MODEL@URL")
    ] = "hf:smollm2",
    option: Annotated[
        list[str] | None, typer.Option("--option", "-O", help="engine option KEY=VALUE (repeatable)")
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="texts sent to the engine per call")] = 512,
    turns: Annotated[
        TurnsOption,
        typer.Option(
            help="last: a conversation's last answer, after its history; each: every assistant turn too, "
            "each after the messages before it, in a turn_scores column"
        ),
    ] = TurnsOption.last,
) -> None:
    """Score (instruction, response) pairs; writes the input columns plus the score columns."""
    from flows.progress import progress_bar
    from infra.engines import EngineError, load_engine
    from infra.engines.spec import parse_options
    from storage.score_io import last_exchange_scores, read_scoring_rows, write_scored

    try:
        rows = read_scoring_rows(str(input), turns.value)
        engine = load_engine(student, parse_options(option))
    except (EngineError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    from tasks.scoring.score import score_pairs

    scorable = [text for r in rows for text in r.texts]
    start = time.perf_counter()
    label = "scoring pairs" if turns == TurnsOption.last else "scoring turns"
    with progress_bar(label, total=len(scorable)) as advance:
        scores = score_pairs(scorable, engine, chunk_size=chunk_size, on_progress=advance)
    elapsed = time.perf_counter() - start
    n_written = write_scored(rows, scores, output, student=engine.spec, turns=turns.value)
    own = last_exchange_scores(rows, scores)
    _summary(len(rows), own, [r for r in rows if r.pair is None], elapsed, n_written, output)
    if turns == TurnsOption.each:
        console.print(f"{len(scorable)} assistant turns scored; per-turn scores in the turn_scores column")


def _summary(
    n_rows: int, scores: list[Any], rejected: list[Any], elapsed: float, n_written: int, out: Path
) -> None:
    ok = [s for s in scores if s.score_error is None]
    ifd = [s.ifd.ppl for s in ok if not math.isnan(s.ifd.ppl)]
    table = Table(title="reflectory score", show_header=False)
    table.add_row("rows read", str(n_rows))
    table.add_row("scored", str(len(ok)))
    table.add_row("errors", str(len(scores) - len(ok) + len(rejected)))
    table.add_row("IFD >= 1 share", f"{sum(v >= 1 for v in ifd) / len(ifd):.1%}" if ifd else "n/a")
    table.add_row("pairs/s", f"{len(scores) / elapsed:.2f}" if elapsed > 0 else "n/a")
    table.add_row("written", f"{n_written} rows -> {out}")
    console.print(table)
