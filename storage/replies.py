"""The ``replies`` table: model replies kept by their content key (``tasks.replies``).

Every new reply is appended once, as soon as its call returns; a lookup reads only the ``key``
column of the table's files, then the files that hold a match. Two runs racing on the same request may
both store it: a lookup takes the earliest, and nothing else depends on there being one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.replies import StoredReply

from .store import Store

TABLE = "replies"


class StoreReplies:
    """``tasks.replies.ReplyStore`` over a store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: set[str] | None = None  # every stored key, read once (the key column only)
        self._lock = threading.Lock()

    def known(self) -> set[str]:
        with self._lock:
            if self._known is None:
                table = self.store.table(TABLE, columns=["key"]) if self.store.exists(TABLE) else None
                self._known = set(table.column("key").to_pylist()) if table is not None else set()
            return self._known

    def lookup(self, keys: Sequence[str]) -> Mapping[str, StoredReply]:
        """The stored replies of ``keys``; a call whose keys are all new (a first pass) reads nothing."""
        known = self.known()
        keys = [k for k in keys if k in known]
        if not keys:
            return {}
        dt = self.store.delta(TABLE)
        if dt is None:
            return {}
        wanted = pc.field("key").isin(pa.array(list(keys), pa.string()))
        rows: list[dict[str, Any]] = []
        for fragment in dt.to_pyarrow_dataset().get_fragments():
            # The key column first: only a file that holds a wanted key is read whole (replies are long).
            if fragment.to_table(columns=["key"], filter=wanted).num_rows:
                rows.extend(fragment.to_table(filter=wanted).to_pylist())
        rows.sort(key=lambda r: r.get("created_at") or datetime.min.replace(tzinfo=UTC))
        found: dict[str, StoredReply] = {}
        for r in rows:
            found.setdefault(
                r["key"],
                StoredReply(
                    run_id=r["run_id"],
                    text=r["text"],
                    finish_reason=r["finish_reason"],
                    prompt_tokens=int(r["prompt_tokens"] or 0),
                    completion_tokens=int(r["completion_tokens"] or 0),
                    free=bool(r.get("free")),
                ),
            )
        return found

    def save(self, rows: Sequence[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        self.store.append(TABLE, [{**r, "created_at": now} for r in rows])
        known = self.known()
        with self._lock:
            known.update(r["key"] for r in rows)
