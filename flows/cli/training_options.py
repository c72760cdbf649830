"""The training options ``reflectory train`` and ``reflectory run evaluate`` share; their defaults are
``TrainSettings``'s own."""

from __future__ import annotations

from typing import Annotated

import typer

from tasks.training.settings import TrainSettings

DEFAULTS = TrainSettings()

Full = Annotated[bool, typer.Option("--full", help="full fine-tuning instead of LoRA")]
Epochs = Annotated[float, typer.Option(help="passes over the data")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="default: 2e-5 full, 2e-4 LoRA")]
BatchSize = Annotated[int, typer.Option(help="effective batch (examples per optimizer step)")]
MicroBatch = Annotated[int, typer.Option(help="examples per forward pass")]
MaxLength = Annotated[int, typer.Option(help="tokens per example; longer ones are cut")]
ChatTemplate = Annotated[str, typer.Option(help="model (the base's own) or vicuna|alpaca|wizardlm|llama-3")]
