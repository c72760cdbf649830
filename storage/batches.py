"""The ``batches`` table: the ledger of Batch API submissions (``tasks.batches``).

Every change of a batch's state is a new row; the latest row per key is the batch's state. A row is
written before the upload (state ``uploading``, no provider id yet) and again once the provider has
the batch, so a kill at any moment leaves a row a rerun can act on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tasks.batches import BatchEntry

from .store import Store

TABLE = "batches"


class StoreBatches:
    """``tasks.batches.BatchLedger`` over a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def latest(self, key: str) -> BatchEntry | None:
        if not self.store.exists(TABLE):
            return None
        rows = (
            self.store.sql(
                "SELECT * FROM batches WHERE key = ? ORDER BY updated_at DESC LIMIT 1", params=[key]
            )
            .to_arrow_table()
            .to_pylist()
        )
        if not rows:
            return None
        r: dict[str, Any] = rows[0]
        return BatchEntry(
            key=r["key"],
            run_id=r["run_id"],
            state=r["state"],
            requests=int(r["requests"]),
            attempt=int(r["attempt"]),
            provider_id=r["provider_id"],
            input_file_id=r["input_file_id"],
            output_file_id=r["output_file_id"],
            error_file_id=r["error_file_id"],
            counts=json.loads(r["counts_json"] or "{}"),
        )

    def write(self, entry: BatchEntry) -> None:
        row = {
            "key": entry.key,
            "run_id": entry.run_id,
            "state": entry.state,
            "requests": entry.requests,
            "attempt": entry.attempt,
            "provider_id": entry.provider_id,
            "input_file_id": entry.input_file_id,
            "output_file_id": entry.output_file_id,
            "error_file_id": entry.error_file_id,
            "counts_json": json.dumps(entry.counts),
            "updated_at": datetime.now(UTC),
        }
        self.store.append(TABLE, [row])
