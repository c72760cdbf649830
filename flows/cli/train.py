"""``reflectory train``: fine-tune a base model on one dataset (trl's SFTTrainer, LoRA by default)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.training_options import (
    DEFAULTS,
    BatchSize,
    ChatTemplate,
    Epochs,
    Full,
    LearningRate,
    MaxLength,
    MicroBatch,
)

console = Console(stderr=True)


def train_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the trained model")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="JSONL/JSON/Parquet of pairs or conversations, or an export folder (train split)",
        ),
    ] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="train on this recycle run's kept variants (in --store)")
    ] = None,
    base: Annotated[str, typer.Option(help="the model to fine-tune: hf:PATH_OR_ID")] = "hf:smollm2",
    store: Annotated[
        str, typer.Option("--store", "-s", help="store that records the training (and holds --run)")
    ] = "./factory",
    full: Full = DEFAULTS.full,
    epochs: Epochs = DEFAULTS.epochs,
    learning_rate: LearningRate = DEFAULTS.learning_rate,
    batch_size: BatchSize = DEFAULTS.batch_size,
    micro_batch: MicroBatch = DEFAULTS.micro_batch,
    max_length: MaxLength = DEFAULTS.max_length,
    seed: Annotated[
        int, typer.Option(help="seed of the order and the adapters' initialisation")
    ] = DEFAULTS.seed,
    chat_template: ChatTemplate = DEFAULTS.chat_template,
    lora_r: Annotated[int, typer.Option(help="LoRA rank")] = DEFAULTS.lora_r,
    no_merge: Annotated[
        bool, typer.Option("--no-merge", help="keep the LoRA adapter apart (the engines need it merged)")
    ] = False,
    limit: Annotated[int | None, typer.Option(help="the first N pairs only")] = None,
    run_id: Annotated[
        str | None, typer.Option(help="the trainings row's run id (default train-TIME)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as one JSON object")] = False,
) -> None:
    """Fine-tune BASE on one dataset and write a model folder the hf and vllm engines load."""
    from pydantic import ValidationError

    from flows.training import TrainingError, record, train_once
    from infra.engines import EngineError
    from storage.store import Store
    from storage.trainings import read_training_data
    from tasks.training.settings import TrainSettings

    if (data is None) == (run is None):
        console.print("[red]error:[/] give one dataset: --data FILE_OR_FOLDER or --run RUN_ID")
        raise typer.Exit(2)
    try:
        settings = TrainSettings(
            full=full, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
            micro_batch=micro_batch, max_length=max_length, seed=seed, chat_template=chat_template,
            lora_r=lora_r, merge=not no_merge,
        )  # fmt: skip
        st = Store(store, create=True)
        dataset = read_training_data(data, store=st, run_id=run)
        if dataset.rejects or dataset.duplicates:
            reasons = ", ".join(f"{n} {r}" for r, n in dataset.rejects.most_common())
            console.print(
                f"[yellow]note:[/] {sum(dataset.rejects.values())} rows not used ({reasons or 'none'}), "
                f"{dataset.duplicates} duplicates left out"
            )
        model, fresh = train_once(
            base,
            dataset,
            settings,
            output,
            limit=limit,
            note=lambda line: console.print(f"[yellow]note:[/] {line}"),
        )
    except (TrainingError, EngineError, ValidationError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {str(exc).splitlines()[0]}")
        raise typer.Exit(2) from exc
    rid = run_id or f"train-{time.strftime('%Y%m%d-%H%M%S')}"
    if not fresh:
        console.print(f"[yellow]note:[/] {output} already holds this training: nothing was trained")
    record(st, model, run_id=rid, arm="train", base=base, data=dataset)
    if as_json:
        typer.echo(json.dumps({**model.as_dict(), "run_id": rid, "trained_now": fresh}))
        return
    table = Table(title=f"reflectory train -> {output}", show_header=False)
    table.add_row("base", base)
    table.add_row("dataset", dataset.dataset)
    table.add_row(
        "examples", f"{model.examples} ({model.dropped} left with no answer token by the length cut)"
    )
    accumulation = model.settings["gradient_accumulation"]
    table.add_row("method", f"{model.settings['method']}, lr {model.settings['learning_rate']:g}, "
                  f"{model.steps} steps of {accumulation * settings.micro_batch} examples "
                  f"({accumulation} x {settings.micro_batch})")  # fmt: skip
    table.add_row("mean answer loss", f"{model.loss_first:.4f} before, {model.loss_last:.4f} after")
    table.add_row("tokens", f"{model.tokens:,} a pass")
    table.add_row("device", f"{model.device}, {model.seconds:.1f} s")
    console.print(table)
