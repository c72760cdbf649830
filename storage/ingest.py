"""Ingest a source into the store: new pairs or questions into ``seeds``, bad rows into ``rejects``, once.

The source streams through in chunks (``CHUNK_ROWS`` rows a commit), so ingesting a dataset holds one
chunk's text and the ids seen, not the dataset. A flow then reads its items from the source again, one
shard at a time (``storage.sources.stream_pairs``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tasks.ingest.records import Pair, Question, Reject

from .sources import stream_pairs, stream_questions
from .store import Store

# Rows per commit while ingesting: large enough that a dataset makes few commits, small enough that a
# chunk's text is a few MB.
CHUNK_ROWS = 10_000


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

    @property
    def items(self) -> int:
        """Pairs (or questions) in the input, each id once: what a run works on."""
        return self.new_seeds + self.known_seeds


def ingest_to_store(
    store: Store, source: str, run_id: str, *, max_chars: int = 100_000, chunk_rows: int = CHUNK_ROWS
) -> IngestCounts:
    """Stream ``source`` in; append only pairs whose id is not yet a seed and rejects not yet recorded."""
    return _Ingest(store, source, run_id, chunk_rows).run(stream_pairs(source, max_chars=max_chars))


def ingest_questions_to_store(
    store: Store, source: str, run_id: str, *, max_chars: int = 100_000, chunk_rows: int = CHUNK_ROWS
) -> IngestCounts:
    """The traces flow's ingest: questions become seeds (the gold answer, if any, in ``output``)."""
    return _Ingest(store, source, run_id, chunk_rows).run(stream_questions(source, max_chars=max_chars))


class _Ingest:
    """One ingest: the ids the store has, the chunk being filled, and the counts so far."""

    def __init__(self, store: Store, source: str, run_id: str, chunk_rows: int) -> None:
        self.store, self.source, self.run_id, self.chunk_rows = store, source, run_id, max(1, chunk_rows)
        self.now = datetime.now(UTC)
        self.known = set(store.table("seeds", columns=["source_id"]).column("source_id").to_pylist())
        self.seen_rejects = _known_rejects(store, source)
        self.seeds: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []
        self.counts = dict.fromkeys(
            ("read", "new_seeds", "known_seeds", "duplicates_in_input", "rejects", "new_rejects"), 0
        )
        self.conversations = self.turns = 0

    def run(self, rows: Iterator[Pair | Question | Reject | None]) -> IngestCounts:
        for row in rows:
            self.counts["read"] += 1
            if row is None:
                self.counts["duplicates_in_input"] += 1
            elif isinstance(row, Reject):
                self._reject(row)
            else:
                self._seed(row)
            if len(self.seeds) + len(self.rejects) >= self.chunk_rows:
                self._commit()
        self._commit()
        return IngestCounts(**self.counts, conversations=self.conversations, turns=self.turns)

    def _seed(self, item: Pair | Question) -> None:
        if isinstance(item, Pair):
            fields = (item.instruction, item.input, item.output, item.messages)
            self.conversations += item.exchanges > 1
            self.turns += sum(1 for role, _ in item.messages if role != "system")
        else:
            fields = (item.question, "", item.answer or "", ())
        if item.id in self.known:
            self.counts["known_seeds"] += 1
            return
        self.known.add(item.id)
        self.counts["new_seeds"] += 1
        instruction, input, output, messages = fields
        self.seeds.append(
            {
                "run_id": self.run_id,
                "source_id": item.id,
                "instruction": instruction,
                "input": input,
                "output": output,
                "messages": [{"role": r, "content": c} for r, c in messages] or None,
                "source": self.source,
                "source_line": item.source_line,
                "ingested_at": self.now,
            }
        )

    def _reject(self, reject: Reject) -> None:
        self.counts["rejects"] += 1
        if (reject.line, reject.reason) in self.seen_rejects:
            return
        self.seen_rejects.add((reject.line, reject.reason))
        self.counts["new_rejects"] += 1
        self.rejects.append(
            {
                "run_id": self.run_id,
                "source": self.source,
                "line": reject.line,
                "reason": reject.reason,
                "raw": reject.raw,
                "ingested_at": self.now,
            }
        )

    def _commit(self) -> None:
        if self.seeds:
            self.store.append("seeds", self.seeds)
            self.seeds = []
        if self.rejects:
            self.store.append("rejects", self.rejects)
            self.rejects = []


def _known_rejects(store: Store, source: str) -> set[tuple[int, str]]:
    rows = store.table("rejects", columns=["source", "line", "reason"]).to_pylist()
    return {(r["line"], r["reason"]) for r in rows if r["source"] == source}
