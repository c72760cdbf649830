"""One training, start to end: the base model's folder, the examples rendered as the base is scored,
a finished training found again instead of repeated, and its ``trainings`` row (docs/evaluate.md).

Shared by ``reflectory train`` and the evaluate flow's arms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.engines.spec import KINDS, parse_spec
from infra.engines.tokenizer import TextTokenizer
from infra.models import resolve_model
from infra.models.fingerprint import model_fingerprint
from infra.training import TrainedModel, train, trained
from storage.trainings import TrainingData, training_row
from tasks.scoring.templates import MODEL_TEMPLATE
from tasks.training.examples import train_examples, training_key
from tasks.training.settings import TrainSettings
from tasks.versions import package_versions

TRAINING_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


class TrainingError(ValueError):
    """A training that cannot start: one line for the user."""


def base_spec(base: str) -> str:
    """An engine spec for the base: ``hf:``/``vllm:`` specs as given, a bare path or Hub id as ``hf:``."""
    return base if base.partition(":")[0] in KINDS else f"hf:{base}"


def base_folder(base: str) -> str:
    """The base model's local folder (a Hub id is downloaded once, as for every engine)."""
    spec = parse_spec(base_spec(base))
    if spec.kind == "openai":
        raise TrainingError(f"{base} is an API model: training needs its weights (hf:PATH_OR_ID)")
    return resolve_model(spec.model)


def prompt_template(folder: str, chat_template: str) -> tuple[str, str | None]:
    """The template a base is trained (and its student answers) with, and a note when the base has no
    chat template of its own (a base model): then the Alpaca reference template, the classic one for
    instruction-tuning a base model."""
    if chat_template != MODEL_TEMPLATE:
        return chat_template, None
    from transformers import AutoTokenizer

    if getattr(AutoTokenizer.from_pretrained(folder, local_files_only=True), "chat_template", None):
        return chat_template, None
    return "alpaca", f"{folder} has no chat template: its prompts use the alpaca template (--chat-template)"


def train_once(
    base: str,
    data: TrainingData,
    settings: TrainSettings,
    output: str | Path,
    *,
    limit: int | None = None,
    note: Callable[[str], None] | None = None,
) -> tuple[TrainedModel, bool]:
    """The model trained from ``base`` on ``data`` in ``output``, and whether it was trained now
    (False: ``output`` already held this very training, which is reused). ``note`` hears what the
    user should know (a base trained in a template it does not have)."""
    folder = base_folder(base)
    template, said = prompt_template(folder, settings.chat_template)
    if said:
        (note or logging.getLogger("reflectory.train").warning)(said)
        settings = settings.model_copy(update={"chat_template": template})
    try:
        fmt = TextTokenizer.load(folder, settings.chat_template, settings.max_length).prompt_format
    except Exception as exc:  # the tokenizer's own message names what is wrong
        raise TrainingError(f"cannot render prompts for {base}: {exc}") from exc
    pairs = data.pairs[:limit] if limit else data.pairs
    if not pairs:
        raise TrainingError(f"no pairs to train on in {data.dataset}")
    examples = train_examples(pairs, fmt)
    key = training_key(base, examples, settings.model_dump())
    done = trained(output)
    if done is not None:
        if done.key == key:
            return done, False
        raise TrainingError(
            f"{output} holds another training (of other data, settings or base): give another --output"
        )
    return train(folder, examples, settings, output, key=key), True


def record(
    store: Any, model: TrainedModel, *, run_id: str, arm: str, base: str, data: TrainingData
) -> dict[str, Any]:
    """Append the training's row to ``trainings`` unless the store has it already (this run's arm, or
    the same training of the same folder)."""
    if store.exists("trainings"):
        [(found,)] = store.sql(
            "SELECT count(*) FROM trainings WHERE (run_id = ? AND source_id = ?) "
            "OR (model_path = ? AND training_key = ?)",
            params=[run_id, arm, model.path, model.key],
        ).fetchall()
        if found:
            return {}
    versions = {
        "packages": package_versions(TRAINING_PACKAGES),
        "base_fingerprint": model_fingerprint(base_spec(base)),
    }
    row = training_row(model, run_id=run_id, arm=arm, base=base, data=data, versions=versions)
    store.append("trainings", [row])
    return row
