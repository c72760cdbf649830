"""Read instruction data from files, folders and Hugging Face datasets, row by row, never failing whole.

Every row comes out as ``(line, record, error, raw)``: a record, or ``None`` with the reason it could
not be read (``invalid_json``, ``invalid_utf8``), so one bad line never hides the others.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tasks.ingest.records import RAW_LIMIT, Pair, Question, Reject, normalise, normalise_question

Row = tuple[int, Mapping[str, Any] | None, str | None, str]
_T = TypeVar("_T", Pair, Question)
SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")


@dataclass
class IngestResult:
    """Pairs in input order (first occurrence of each id), rejects with reasons, duplicates dropped."""

    pairs: list[Pair] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    n_duplicates: int = 0


@dataclass
class QuestionsResult:
    """Questions (with their gold answers when given) in input order, rejects, duplicates dropped."""

    questions: list[Question] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    n_duplicates: int = 0


def load_pairs(source: str, *, max_chars: int = 100_000) -> IngestResult:
    """Every pair of ``source`` in memory (``stream_pairs`` reads one row at a time)."""
    pairs, rejects, n_duplicates = _collect(stream_pairs(source, max_chars=max_chars))
    return IngestResult(pairs, rejects, n_duplicates)


def load_questions(source: str, *, max_chars: int = 100_000) -> QuestionsResult:
    """Questions for the traces flow (``question``, ``problem``, ``instruction``, ``prompt``) and gold."""
    questions, rejects, n_duplicates = _collect(stream_questions(source, max_chars=max_chars))
    return QuestionsResult(questions, rejects, n_duplicates)


def stream_pairs(source: str, *, max_chars: int = 100_000) -> Iterator[Pair | Reject | None]:
    """Each row of ``source`` in order: its pair, its reject, or None for a pair seen before. Only the
    ids seen so far are held, so a dataset of any size streams through."""
    return _stream(source, lambda record, line: normalise(record, line, max_chars=max_chars))


def stream_questions(source: str, *, max_chars: int = 100_000) -> Iterator[Question | Reject | None]:
    """As ``stream_pairs``, for the traces flow's questions."""
    return _stream(source, lambda record, line: normalise_question(record, line, max_chars=max_chars))


def unique(rows: Iterator[_T | Reject | None]) -> Iterator[_T]:
    """The items of a stream, first occurrences only, in input order (rejects and duplicates skipped)."""
    return (row for row in rows if row is not None and not isinstance(row, Reject))


def _stream(
    source: str, make: Callable[[Mapping[str, Any], int], _T | Reject]
) -> Iterator[_T | Reject | None]:
    """Every row becomes an item or a reject; an id seen before is a duplicate (None)."""
    seen: set[str] = set()
    for line, record, error, raw in read_records(source):
        item = make(record, line) if record is not None else Reject(line, error or "", raw)
        if isinstance(item, Reject):
            yield item
        elif item.id in seen:
            yield None
        else:
            seen.add(item.id)
            yield item


def _collect(rows: Iterator[_T | Reject | None]) -> tuple[list[_T], list[Reject], int]:
    items: list[_T] = []
    rejects: list[Reject] = []
    n_duplicates = 0
    for row in rows:
        if row is None:
            n_duplicates += 1
        elif isinstance(row, Reject):
            rejects.append(row)
        else:
            items.append(row)
    return items, rejects, n_duplicates


def read_records(source: str) -> Iterator[Row]:
    """Rows of a file (by extension), a folder of files (sorted), or a Hugging Face dataset."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            yield from _hf_dataset(str(path), on_disk=True)
            return
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise ValueError(f"no {', '.join(SUFFIXES)} files in {path}")
        offset = 0
        for f in files:
            # Lines number on across files so every row of a folder has a distinct line.
            last = offset
            for line, record, error, raw in read_records(str(f)):
                last = offset + line
                yield last, record, error, raw
            offset = last
        return
    suffix = path.suffix.lower()
    if path.exists():
        if suffix in (".jsonl", ".ndjson"):
            yield from _jsonl(path)
        elif suffix == ".json":
            yield from _json(path)
        elif suffix == ".parquet":
            yield from _parquet(path)
        elif suffix == ".csv":
            yield from _csv(path)
        else:
            raise ValueError(f"unknown input format {suffix!r} for {path}: use one of {', '.join(SUFFIXES)}")
        return
    if suffix in SUFFIXES or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"input {source!r} does not exist")
    yield from _hf_dataset(source, on_disk=False)


def _jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        for line, blob in enumerate(fh, 1):
            try:
                text = blob.decode("utf-8")
            except UnicodeDecodeError:
                yield line, None, "invalid_utf8", blob[:RAW_LIMIT].decode("utf-8", "replace")
                continue
            if not text.strip():
                continue
            try:
                yield line, json.loads(text), None, text[:RAW_LIMIT]
            except json.JSONDecodeError:
                yield line, None, "invalid_json", text[:RAW_LIMIT]


def _json(path: Path) -> Iterator[Row]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not valid UTF-8 ({exc}); use JSONL to keep the good rows") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); use JSONL to keep the good rows") from exc
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of objects (or {{'data': [...]}})")
    for line, record in enumerate(data, 1):
        yield line, record, None, ""


def _parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    line = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            line += 1
            yield line, record, None, ""


def _csv(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        try:
            for line, record in enumerate(csv.DictReader(text), 1):
                yield line, record, None, ""
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not valid UTF-8 ({exc})") from exc


def _hf_dataset(source: str, *, on_disk: bool) -> Iterator[Row]:
    import datasets

    try:
        ds = datasets.load_from_disk(source) if on_disk else datasets.load_dataset(source, split="train")
    except Exception as exc:
        where = (
            "saved dataset" if on_disk else "Hugging Face dataset id (offline: use a local file or folder)"
        )
        raise ValueError(f"cannot load {source!r} as a {where}: {exc}") from exc
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    for line, record in enumerate(ds, 1):
        yield line, record, None, ""
