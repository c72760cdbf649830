"""The hyperparameters of a training run, with the papers' defaults where they fit (docs/evaluate.md).

Selective Reflection-Tuning and Cherry_LLM fine-tune fully: batch 128, lr 2e-5, 3 epochs, length
2048. The effective batch is reached through gradient accumulation over micro-batches, so a small
device trains with the same batch as a large one. LoRA needs a larger learning rate than full
fine-tuning: 2e-4 is the default of the LoRA papers' and peft's examples for adapters of rank 16.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

FULL_LR = 2e-5
LORA_LR = 2e-4


class TrainSettings(BaseModel):
    """How to train: the papers' defaults, LoRA unless ``full``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    full: bool = Field(False, description="full fine-tuning instead of LoRA")
    epochs: float = Field(3.0, gt=0)
    max_length: int = Field(
        2048, ge=16, description="tokens per example (prompt and answer); longer ones are cut"
    )
    batch_size: int = Field(128, ge=1, description="the effective batch: examples per optimizer step")
    micro_batch: int = Field(4, ge=1, description="examples per forward pass; the rest is accumulation")
    learning_rate: float | None = Field(None, gt=0, description="default: 2e-5 full, 2e-4 LoRA")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    merge: bool = Field(True, description="merge LoRA into the weights, so any engine loads the folder")
    seed: int = 0
    chat_template: str = Field(
        "model", description="the base's own template, or vicuna|alpaca|wizardlm|llama-3"
    )

    @model_validator(mode="after")
    def _micro_within_batch(self) -> TrainSettings:
        if self.micro_batch > self.batch_size:
            raise ValueError(f"micro_batch {self.micro_batch} is larger than batch_size {self.batch_size}")
        return self

    @property
    def lr(self) -> float:
        return self.learning_rate or (FULL_LR if self.full else LORA_LR)

    def accumulation(self, examples: int, devices: int = 1) -> int:
        """Micro-batches per optimizer step, so a step sees ``batch_size`` examples (fewer when the
        dataset is smaller than one batch)."""
        per_pass = self.micro_batch * max(1, devices)
        return max(1, math.ceil(min(self.batch_size, examples) / per_pass))

    def steps(self, examples: int, devices: int = 1) -> int:
        """Optimizer steps of the whole run."""
        per_step = self.micro_batch * max(1, devices) * self.accumulation(examples, devices)
        return max(1, math.ceil(examples / per_step * self.epochs))

    def record(self, examples: int, devices: int = 1) -> dict[str, Any]:
        """What the ``trainings`` row keeps: every setting, the learning rate used and the schedule."""
        return {
            **self.model_dump(),
            "learning_rate": self.lr,
            "gradient_accumulation": self.accumulation(examples, devices),
            "steps": self.steps(examples, devices),
            "method": "full" if self.full else "lora",
        }
