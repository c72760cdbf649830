"""Supervised fine-tuning of a causal LM on prompt/answer examples: trl's ``SFTTrainer``, LoRA through
peft by default (docs/evaluate.md).

The loss is on the answer only (trl's prompt-completion form: the prompt is the text the student is
scored with, the answer ends with the tokenizer's EOS). The mean loss over the examples is measured
in one pass before training and one after. A LoRA run is merged into the weights by default, so the
folder loads in the ``hf`` and ``vllm`` engines like any model. The folder is written whole or not at
all: training goes to a sibling folder that is renamed when it is complete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.training.examples import TrainExample
from tasks.training.settings import TrainSettings

DONE_FILE = "training.json"  # written last into a trained model's folder


@dataclass(frozen=True)
class TrainedModel:
    """What a training run made and measured."""

    path: str
    examples: int  # trained on
    dropped: int  # given, but left without an answer token by the length cut (trl drops them)
    tokens: int  # tokens of one pass over the examples (prompt and answer)
    loss_first: float  # mean answer loss over the examples before training
    loss_last: float  # and after
    loss_curve: list[dict[str, float]] = field(default_factory=list)  # step, epoch, loss while training
    seconds: float = 0.0  # the whole run: both loss passes and the training
    train_seconds: float = 0.0  # the optimizer steps alone
    device: str = "cpu"
    steps: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # tasks.training.examples.training_key of what it was trained from

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name() -> str:
    """The device a training run here uses: the first GPU's name, or ``cpu``."""
    import torch

    return f"cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


def trained(path: str | Path) -> TrainedModel | None:
    """The record of a complete trained folder, or None when there is none."""
    done = Path(path) / DONE_FILE
    if not done.is_file():
        return None
    return TrainedModel(**json.loads(done.read_text()))


def train(
    base: str, examples: Sequence[TrainExample], settings: TrainSettings, output: str | Path, *, key: str = ""
) -> TrainedModel:
    """Fine-tune the model in folder ``base`` on ``examples`` and write it to ``output`` (``key``:
    what it is trained from, kept in its record)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise ValueError("no examples to train on")
    out = Path(output).expanduser()
    work = out.with_name(out.name + ".training")
    shutil.rmtree(work, ignore_errors=True)
    set_seed(settings.seed)
    gpu = torch.cuda.is_available()
    bf16 = gpu and torch.cuda.is_bf16_supported()
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        base, local_files_only=True, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    data = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])
    devices = max(1, torch.cuda.device_count()) if gpu else 1
    steps = settings.steps(len(examples), devices)
    config = SFTConfig(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.micro_batch,
        per_device_eval_batch_size=settings.micro_batch,
        gradient_accumulation_steps=settings.accumulation(len(examples), devices),
        learning_rate=settings.lr,
        lr_scheduler_type="cosine",
        # Warm-up steps, rounded down: a run of a few steps (a small arm) starts at its full rate
        # instead of spending its first step at a learning rate of 0.
        warmup_steps=int(settings.warmup_ratio * steps),
        logging_steps=max(1, steps // 50),
        save_strategy="no",
        report_to=[],
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=bf16,
        use_cpu=not gpu,
        max_length=settings.max_length,
        completion_only_loss=True,
        dataloader_num_workers=0,
    )
    peft_config = None
    if not settings.full:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs: stdout stays the caller's
        loss_first = float(trainer.evaluate()["eval_loss"])
        steps_start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - steps_start
        loss_last = float(trainer.evaluate()["eval_loss"])
    seconds = time.perf_counter() - start
    tuned: Any = trainer.model
    if not settings.full and settings.merge:
        tuned = tuned.merge_and_unload()  # the LoRA weights folded in: a plain model folder
    tuned.save_pretrained(str(work))
    tokenizer.save_pretrained(str(work))
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    prepared: Any = trainer.train_dataset  # tokenised, examples left with no answer token dropped
    result = TrainedModel(
        path=str(out),
        examples=len(prepared),
        dropped=len(examples) - len(prepared),
        tokens=sum(len(ids) for ids in prepared["input_ids"]),
        loss_first=loss_first,
        loss_last=loss_last,
        loss_curve=[
            {"step": int(h["step"]), "epoch": float(h["epoch"]), "loss": float(h["loss"])}
            for h in trainer.state.log_history
            if "loss" in h
        ],
        seconds=seconds,
        train_seconds=train_seconds,
        device=device_name(),
        steps=int(trainer.state.global_step),
        settings=settings.record(len(examples), devices),
        key=key,
    )
    (work / DONE_FILE).write_text(json.dumps(result.as_dict(), indent=1))
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return result
