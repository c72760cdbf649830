"""Ingest a source into the store: new pairs into ``seeds``, bad rows into ``rejects``, nothing twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .sources import IngestResult, load_pairs
from .store import Store


@dataclass(frozen=True)
class IngestCounts:
    read: int
    new_seeds: int
    known_seeds: int
    duplicates_in_input: int
    rejects: int
    new_rejects: int


def ingest_to_store(
    store: Store, source: str, run_id: str, *, max_chars: int = 100_000
) -> tuple[IngestResult, IngestCounts]:
    """Load ``source``; append only pairs whose id is not yet a seed and rejects not yet recorded.

    Returns the loaded pairs too (in input order), so a flow can shard exactly what it ingested.
    """
    result = load_pairs(source, max_chars=max_chars)
    now = datetime.now(UTC)
    known = set(store.table("seeds", columns=["source_id"]).column("source_id").to_pylist())
    new = [p for p in result.pairs if p.id not in known]
    if new:
        store.append(
            "seeds",
            [
                {
                    "run_id": run_id,
                    "source_id": p.id,
                    "instruction": p.instruction,
                    "input": p.input,
                    "output": p.output,
                    "source": source,
                    "source_line": p.source_line,
                    "ingested_at": now,
                }
                for p in new
            ],
        )
    seen_rejects = _known_rejects(store, source)
    fresh = [r for r in result.rejects if (r.line, r.reason) not in seen_rejects]
    if fresh:
        store.append(
            "rejects",
            [
                {
                    "run_id": run_id,
                    "source": source,
                    "line": r.line,
                    "reason": r.reason,
                    "raw": r.raw,
                    "ingested_at": now,
                }
                for r in fresh
            ],
        )
    counts = IngestCounts(
        read=len(result.pairs) + len(result.rejects) + result.n_duplicates,
        new_seeds=len(new),
        known_seeds=len(result.pairs) - len(new),
        duplicates_in_input=result.n_duplicates,
        rejects=len(result.rejects),
        new_rejects=len(fresh),
    )
    return result, counts


def _known_rejects(store: Store, source: str) -> set[tuple[int, str]]:
    rows = store.table("rejects", columns=["source", "line", "reason"]).to_pylist()
    return {(r["line"], r["reason"]) for r in rows if r["source"] == source}
