"""``reflectory reflect``: one teacher stage on its own, from a file to a Parquet file."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


class Mode(StrEnum):
    instruction = "instruction"
    response = "response"
    trace = "trace"


def reflect_command(
    input: Annotated[
        str, typer.Option("--input", "-i", help="pairs (instruction/response) or questions (trace)")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write")],
    teacher: Annotated[
        str, typer.Option(help="engine spec: vllm:MODEL, hf:MODEL, openai:MODEL@URL")
    ] = "vllm:smollm2",
    mode: Annotated[Mode, typer.Option(help="instruction, response or trace")] = Mode.instruction,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-O", help="engine option KEY=VALUE")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="new tokens per reply")] = 512,
    temperature: Annotated[float, typer.Option()] = 0.7,
    repetition_penalty: Annotated[float, typer.Option(help="above 1 discourages repeating tokens")] = 1.0,
    free_text: Annotated[
        bool, typer.Option("--free-text", help="free-text replies instead of constrained forms")
    ] = False,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option(help="rows per generate call")] = 64,
    limit: Annotated[int | None, typer.Option(help="only the first N rows")] = None,
) -> None:
    """Run the instruction reflection, the response reflection, or trace generation on a file."""
    from flows.progress import progress_bar
    from infra.engines import EngineError, Sampling, engine_to_run, load_engine
    from infra.engines.spec import parse_options
    from tasks.teacher.forms import form_note, instruction_form, response_form, trace_form
    from tasks.teacher.stages import StageStats

    sampling = Sampling(
        max_tokens=max_tokens, temperature=temperature, seed=seed, repetition_penalty=repetition_penalty
    )
    try:
        forms = {Mode.instruction: instruction_form, Mode.response: response_form, Mode.trace: trace_form}
        form = forms[mode]
        if not free_text and (line := form_note(form(max_tokens))):
            console.print(f"[yellow]note:[/] {line}")  # the budget stands; the replies are free text
        rows, rejects = _read(input, mode)
        if note := engine_to_run(teacher, parse_options(option))[1]:
            console.print(f"[yellow]note:[/] {note}")
        engine = load_engine(teacher, parse_options(option))
    except (EngineError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    rows = rows[:limit] if limit else rows
    stats, out = StageStats(), list[dict[str, Any]]()
    with progress_bar(
        f"{mode.value} reflection" if mode != Mode.trace else "traces", total=len(rows)
    ) as advance:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            produced, batch_stats = _run(mode, batch, engine, sampling, constrained=not free_text)
            out.extend(r.to_dict() for r in produced)
            stats = stats.merge(batch_stats)
            advance(len(batch))
    import pyarrow as pa
    import pyarrow.parquet as pq

    output.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(out) if out else pa.table({}), output)
    _summary(stats, len(rejects), output)


def _read(source: str, mode: Mode) -> tuple[list[Any], list[Any]]:
    from storage.sources import load_pairs, load_questions

    if mode != Mode.trace:  # a conversation's last exchange is reflected after its history
        result = load_pairs(source)
        return result.pairs, result.rejects
    questions = load_questions(source)
    return questions.questions, questions.rejects


def _run(
    mode: Mode, batch: list[Any], engine: Any, sampling: Any, *, constrained: bool
) -> tuple[list[Any], Any]:
    from tasks.teacher.stages import generate_traces, reflect_instructions, reflect_responses

    if mode == Mode.instruction:
        return reflect_instructions(batch, engine, sampling, constrained=constrained)
    if mode == Mode.response:
        return reflect_responses(batch, engine, sampling, which="original", constrained=constrained)
    return generate_traces(batch, engine, sampling, constrained=constrained)


def _summary(stats: Any, n_rejects: int, output: Path) -> None:
    table = Table(title="reflectory reflect", show_header=False)
    table.add_row("rows", str(stats.rows))
    table.add_row("parsed", str(stats.parsed))
    table.add_row("failed", json.dumps(dict(stats.failed)) if stats.failed else "0")
    table.add_row("input rejects", str(n_rejects))
    table.add_row("tokens (prompt / completion)", f"{stats.prompt_tokens} / {stats.completion_tokens}")
    table.add_row("written", str(output))
    console.print(table)
