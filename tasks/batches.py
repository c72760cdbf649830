"""OpenAI's Batch API, the rules of it (pure): stable request ids, files within the limits, the
ledger's rows, and the results read back from the output and error files.

A batch is addressed by its content: its key is a hash of its requests' ids, and a request's id is
a hash of its body. The same stage of the same shard asks the same requests again after a kill, so
a rerun finds its batch again (in the ledger, or on the provider by the key in the batch's
metadata) and goes on polling instead of uploading again (docs/api-teacher.md, "The Batch API").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# A batch's states: waiting ones, and the ends (an expired or cancelled batch keeps its finished results).
WAITING = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")
# OpenAI's limits per input file.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
# Ledger states before the provider has a batch: the requests are written down, then the file is up.
UPLOADING = "uploading"
ENDPOINT = "/v1/chat/completions"


def custom_id(body: Mapping[str, Any]) -> str:
    """A request's id in a batch: a hash of its body, so the same request has the same id on a rerun."""
    return "req-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def batch_key(ids: Sequence[str], attempt: int = 1) -> str:
    """A batch's key: its requests' ids (and which attempt at them it is)."""
    blob = json.dumps({"ids": sorted(ids), "attempt": attempt})
    return "rb-" + hashlib.sha256(blob.encode()).hexdigest()[:32]


def jsonl_line(cid: str, body: Mapping[str, Any]) -> bytes:
    return (json.dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}) + "\n").encode()


def split_files(
    lines: Sequence[bytes], max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES
) -> list[list[int]]:
    """Line indexes per input file, each within the request and byte limits; a single line over the
    byte limit is an error naming it."""
    files: list[list[int]] = []
    size = 0
    for i, line in enumerate(lines):
        if len(line) > max_bytes:
            raise ValueError(
                f"request {i} is {len(line):,} bytes, more than a batch file may hold ({max_bytes:,})"
            )
        if not files or len(files[-1]) >= max_requests or size + len(line) > max_bytes:
            files.append([])
            size = 0
        files[-1].append(i)
        size += len(line)
    return files


@dataclass(frozen=True)
class BatchEntry:
    """A row of the ledger: one batch as last seen. Written after every change of state."""

    key: str
    run_id: str
    state: str  # uploading, then the provider's status
    requests: int
    attempt: int = 1
    provider_id: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


class BatchLedger(Protocol):
    """Where batches are written down (``storage.batches.StoreBatches``)."""

    def latest(self, key: str) -> BatchEntry | None: ...

    def write(self, entry: BatchEntry) -> None: ...


@dataclass
class Results:
    """What a finished batch answered: response bodies by request id, and the failures' reasons."""

    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def read_results(output: str, errors: str) -> Results:
    """The output and error files of a batch: a line with a 200 response is an answer; any other line
    (an error, a non-200 status) is a failure with the provider's reason."""
    results = Results()
    for text in (output, errors):
        for line in text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            cid = row["custom_id"]
            response = row.get("response") or {}
            if response.get("status_code") == 200 and not row.get("error"):
                results.bodies[cid] = response["body"]
                results.failures.pop(cid, None)
            elif cid not in results.bodies:
                error = row.get("error") or (response.get("body") or {}).get("error") or {}
                code = error.get("code") or f"HTTP {response.get('status_code')}"
                results.failures[cid] = f"{code}: {error.get('message') or 'no reason given'}"
    return results


def next_poll(seconds: float, first: float, cap: float = 60.0) -> float:
    """The wait before the next look at a batch: from ``first``, half again each time, up to ``cap``."""
    return first if seconds <= 0 else min(cap, seconds * 1.5)
