"""Training examples: the prompt a student is trained to answer and the answer (pure).

The prompt is rendered exactly as scoring renders it (``tasks.scoring.templates``): the base's chat
template or a named reference template, a conversation's history before its last user message. The
loss is on the answer only (docs/evaluate.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.conversation import PairLike
from tasks.scoring.templates import PromptFormat


@dataclass(frozen=True)
class TrainExample:
    """One example: the rendered prompt (up to where the answer starts) and the answer."""

    source_id: str
    prompt: str
    completion: str


def train_examples(pairs: Sequence[PairLike], fmt: PromptFormat) -> list[TrainExample]:
    """Each pair's prompt in ``fmt`` (after its history) and its answer."""
    return [TrainExample(p.id, fmt.prompt(p.instruction, p.input, p.history), p.output) for p in pairs]


def training_key(base: str, examples: Sequence[TrainExample], settings: dict[str, object]) -> str:
    """What decides a trained model: the base, every example and the settings (a sha256), so a
    finished training is found again and never repeated, and a folder is never reused for another."""
    digest = hashlib.sha256(json.dumps([base, settings], sort_keys=True, default=str).encode())
    for e in examples:
        digest.update(json.dumps([e.prompt, e.completion]).encode())
    return digest.hexdigest()[:16]
