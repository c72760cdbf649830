"""What a training run reads and what it records: its pairs from a file, a folder (an export's train
split) or a run's kept selection in the store, and its ``trainings`` row (docs/evaluate.md)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.conversation import history_of, user_message
from tasks.ingest.records import Pair, make_pair

from .sources import load_pairs


@dataclass
class TrainingData:
    """The pairs to train on, where they came from, and what could not be used (with reasons)."""

    pairs: list[Pair]
    dataset: str
    version: int | None = None
    rejects: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0


def read_training_data(
    source: str | None = None, *, store: Any = None, run_id: str | None = None
) -> TrainingData:
    """A file or folder of pairs or conversations (an export folder: its train split only), or the
    kept variants of a recycle run (``run_id`` in ``store``), each after its conversation's history."""
    if run_id is not None:
        return _run_selection(store, run_id)
    if source is None:
        raise ValueError("give a dataset: a file or folder of pairs, or a run id")
    path = Path(source).expanduser()
    train_split = sorted(path.rglob("train-*.parquet")) if path.is_dir() else []
    pairs: list[Pair] = []
    rejects: Counter[str] = Counter()
    duplicates = 0
    seen: set[str] = set()
    for part in [str(p) for p in train_split] or [source]:
        loaded = load_pairs(part)
        rejects.update(r.reason for r in loaded.rejects)
        duplicates += loaded.n_duplicates
        for pair in loaded.pairs:
            if pair.id in seen:
                duplicates += 1
                continue
            seen.add(pair.id)
            pairs.append(pair)
    return TrainingData(pairs, str(path), None, rejects, duplicates)


def _run_selection(store: Any, run_id: str) -> TrainingData:
    """The run's kept variants, as ``reflectory export`` gives them before curation."""
    from .hub_export import read_from_store

    rows, lineage = read_from_store(store, "selected", run_id=run_id)
    kept = [r for r in rows.to_pylist() if r.get("kept")]
    if not kept:
        raise ValueError(f"run {run_id!r} kept no pairs in {lineage.store}: nothing to train on")
    pairs = [
        pair_after(r.get("messages"), r["instruction"], r["input"] or "", r["output"], line)
        for line, r in enumerate(kept, 1)
    ]
    return TrainingData(pairs, f"{lineage.store}/selected@v{lineage.version}#{run_id}", lineage.version)


def pair_after(
    stored: list[dict[str, str]] | None, instruction: str, input: str, output: str, line: int
) -> Pair:
    """A pair after the history of a stored conversation (``seeds.messages``; none for a single turn)."""
    history = history_of([(m["role"], m["content"]) for m in stored or []])
    exchange = (("user", user_message(instruction, input)), ("assistant", output))
    return make_pair(instruction, input, output, line, (*history, *exchange))


def training_row(
    trained: Any, *, run_id: str, arm: str, base: str, data: TrainingData, versions: dict[str, Any]
) -> dict[str, Any]:
    """The ``trainings`` row of a trained model (``infra.training.TrainedModel``)."""
    return {
        "run_id": run_id,
        "source_id": arm,
        "base": base,
        "base_fingerprint": json.dumps(versions.get("base_fingerprint", {}), sort_keys=True),
        "dataset": data.dataset,
        "dataset_version": data.version,
        "examples": trained.examples,
        "dropped": trained.dropped,
        "tokens": trained.tokens,
        "hyperparameters_json": json.dumps(trained.settings, sort_keys=True),
        "loss_curve_json": json.dumps(trained.loss_curve),
        "loss_first": trained.loss_first,
        "loss_last": trained.loss_last,
        "seconds": trained.seconds,
        "device": trained.device,
        "model_path": trained.path,
        "training_key": trained.key,
        "versions_json": json.dumps(versions.get("packages", {}), sort_keys=True),
        "created_at": datetime.now(UTC),
    }
