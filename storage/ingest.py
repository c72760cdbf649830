"""Ingest a source into the store: new pairs or questions into ``seeds``, bad rows into ``rejects``, once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from tasks.ingest.records import Reject

from .sources import IngestResult, QuestionsResult, load_pairs, load_questions
from .store import Store


@dataclass(frozen=True)
class IngestCounts:
    read: int
    new_seeds: int
    known_seeds: int
    duplicates_in_input: int
    rejects: int
    new_rejects: int
    conversations: int = 0  # rows of more than one exchange (user turn answered)
    turns: int = 0  # user and assistant messages over every row loaded


def ingest_to_store(
    store: Store, source: str, run_id: str, *, max_chars: int = 100_000
) -> tuple[IngestResult, IngestCounts]:
    """Load ``source``; append only pairs whose id is not yet a seed and rejects not yet recorded.

    Returns the loaded pairs too (in input order), so a flow can shard exactly what it ingested.
    """
    result = load_pairs(source, max_chars=max_chars)
    seeds = [(p.id, p.instruction, p.input, p.output, p.source_line, p.messages) for p in result.pairs]
    counts = _record(store, source, run_id, seeds, result.rejects, result.n_duplicates)
    conversations = sum(1 for p in result.pairs if p.exchanges > 1)
    turns = sum(sum(1 for role, _ in p.messages if role != "system") for p in result.pairs)
    return result, replace(counts, conversations=conversations, turns=turns)


def ingest_questions_to_store(
    store: Store, source: str, run_id: str, *, max_chars: int = 100_000
) -> tuple[QuestionsResult, IngestCounts]:
    """The traces flow's ingest: questions become seeds (the gold answer, if any, in ``output``)."""
    result = load_questions(source, max_chars=max_chars)
    seeds = [(q.id, q.question, "", q.answer or "", q.source_line, ()) for q in result.questions]
    return result, _record(store, source, run_id, seeds, result.rejects, result.n_duplicates)


def _record(
    store: Store,
    source: str,
    run_id: str,
    seeds: Sequence[tuple[str, str, str, str, int, tuple[tuple[str, str], ...]]],
    rejects: list[Reject],
    n_duplicates: int,
) -> IngestCounts:
    now = datetime.now(UTC)
    known = set(store.table("seeds", columns=["source_id"]).column("source_id").to_pylist())
    new = [s for s in seeds if s[0] not in known]
    if new:
        store.append(
            "seeds",
            [
                {
                    "run_id": run_id,
                    "source_id": source_id,
                    "instruction": instruction,
                    "input": input,
                    "output": output,
                    "messages": [{"role": r, "content": c} for r, c in messages] or None,
                    "source": source,
                    "source_line": line,
                    "ingested_at": now,
                }
                for source_id, instruction, input, output, line, messages in new
            ],
        )
    seen_rejects = _known_rejects(store, source)
    fresh = [r for r in rejects if (r.line, r.reason) not in seen_rejects]
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
    return IngestCounts(
        read=len(seeds) + len(rejects) + n_duplicates,
        new_seeds=len(new),
        known_seeds=len(seeds) - len(new),
        duplicates_in_input=n_duplicates,
        rejects=len(rejects),
        new_rejects=len(fresh),
    )


def _known_rejects(store: Store, source: str) -> set[tuple[int, str]]:
    rows = store.table("rejects", columns=["source", "line", "reason"]).to_pylist()
    return {(r["line"], r["reason"]) for r in rows if r["source"] == source}
