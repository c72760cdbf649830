"""The ``replies`` table: model replies kept by their content key (``tasks.replies``).

Every new reply is appended once, as soon as its call returns; a lookup reads only the ``key``
column of the table's files, then the few rows that match. Two runs racing on the same request may
both store it: a lookup takes the earliest, and nothing else depends on there being one.
"""

from __future__ import annotations

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

    def lookup(self, keys: Sequence[str]) -> Mapping[str, StoredReply]:
        if not keys:
            return {}
        dt = self.store.delta(TABLE)
        if dt is None:
            return {}
        dataset = dt.to_pyarrow_dataset()
        table = dataset.to_table(filter=pc.field("key").isin(pa.array(list(keys), pa.string())))
        found: dict[str, StoredReply] = {}
        rows = sorted(
            table.to_pylist(), key=lambda r: r.get("created_at") or datetime.min.replace(tzinfo=UTC)
        )
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
