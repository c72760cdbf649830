"""An ``openai:`` role through OpenAI's Batch API (``-T batch=true``), with a ledger in the store.

``generate`` turns its requests into JSONL lines with stable ids (``tasks.batches``), and for each
batch key: finds the batch in the ledger, or on the provider by the key in its metadata; otherwise
writes the ledger row (``uploading``), uploads the file, creates the batch, and writes the row again
with the provider's ids. Then it polls, backing off, writing each change of state, until the batch
ends. It reads both the output and the error file (an expired or cancelled batch keeps its finished
results), sends what failed or never ran again in a new batch, ``batch_attempts`` times at most, and
turns what is still missing into the failure of its request, with the provider's reason.

A kill at any moment never sends a request twice: before the upload, the rerun finds no batch and
uploads; after it, the provider lists the batch by its key. The files and batches go through the
official ``openai`` client (uploads, pagination, retries of transient errors); chat bodies are the
``openai:`` engine's own, so a batch line asks exactly what a direct request would.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from tasks.batches import (
    ENDPOINT,
    UPLOADING,
    BatchEntry,
    BatchLedger,
    Results,
    batch_key,
    custom_id,
    jsonl_line,
    next_poll,
    read_results,
    split_files,
)
from tasks.budget import Budget, Reservation, exhausted
from tasks.cost import Prices
from tasks.engine import ChatRequest, Completion, ModelRole, Sampling

from . import check_options, parse_spec
from .openai_engine import DEFAULT_BASE_URL, OpenAIEngine, api_key

log = logging.getLogger("reflectory.batch")
BATCH_FAILED = "batch_failed"
# Batches being waited on in this process, by key: (provider id, state, requests done, requests).
_WAITING: dict[str, tuple[str, str, int, int]] = {}
_WAITING_LOCK = threading.Lock()


def waiting_batches() -> str | None:
    """One line for the progress display while batches are out: how many in each state, and requests done."""
    with _WAITING_LOCK:
        seen = list(_WAITING.values())
    if not seen:
        return None
    states: dict[str, int] = {}
    for _, state, _, _ in seen:
        states[state] = states.get(state, 0) + 1
    done, total = sum(s[2] for s in seen), sum(s[3] for s in seen)
    parts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return f"batches: {parts}; {done} of {total} requests done"


def batch_prices(role: ModelRole) -> Prices:
    """The role's prices at the batch discount (``batch_discount``, half by default)."""
    share = float(role.options.get("batch_discount", 0.5))
    p = role.prices
    return Prices(
        input=None if p.input is None else p.input * share,
        output=None if p.output is None else p.output * share,
        device_hour=p.device_hour,
    )


class BatchEngine:
    """A role's chat requests as Batch API jobs; one per role per run, shared by its shard tasks."""

    def __init__(self, role: ModelRole, ledger: BatchLedger, run_id: str) -> None:
        parsed = parse_spec(role.spec)
        self.options = check_options(role.spec, role.options)
        self.spec = str(parsed)
        self.run_id = run_id
        self.ledger = ledger
        self.base_url = (parsed.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        # Bodies, forms and structured mode exactly as the direct engine sends them.
        self.chat = OpenAIEngine(parsed.model, self.base_url, self.options, spec=self.spec)
        self.budget = Budget(self.options.token_budget, self.options.max_cost, batch_prices(role))
        self._enqueued = 0
        self._enqueue = threading.Condition()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            # a local server may take no key; the client wants one
            key = api_key(self.base_url, self.options.api_key_env) or "none"
            self._client = OpenAI(api_key=key, base_url=self.base_url, max_retries=self.options.max_retries)
        return self._client

    def __repr__(self) -> str:  # never show the key
        return f"BatchEngine({self.spec!r})"

    @property
    def prompt_format(self) -> Any:
        return self.chat.prompt_format

    def close(self) -> None:
        self.chat.close()

    # -- generate ------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        if not requests:
            return []
        mode = self.chat.structured_mode() if any(r.form for r in requests) else "json_schema"
        bodies = [self.chat.chat_body(r, sampling, mode) for r in requests]
        ids = [custom_id(b) for b in bodies]
        out: dict[str, Completion] = {}
        held: dict[str, Reservation] = {}
        todo: dict[str, dict[str, Any]] = {}
        for cid, request, body in zip(ids, requests, bodies, strict=True):
            if cid in todo or cid in out:
                continue  # the same request twice in one call: asked once
            if self.budget.limited:
                got, _ = self.budget.try_reserve(request, sampling)
                if got is None:  # a batch waits hours: nothing in flight will settle soon enough
                    out[cid] = Completion("", None, 0, 0, error=exhausted(self.budget))
                    continue
                held[cid] = got
            todo[cid] = body
        failures: dict[str, str] = {}
        for attempt in range(1, self.options.batch_attempts + 1):
            if not todo:
                break
            results = self._run(todo, attempt)
            for cid, data in results.bodies.items():
                if cid in todo:
                    request = requests[ids.index(cid)]
                    out[cid] = self.chat.completion(data, request, mode, 0.0)
            failures.update(results.failures)
            todo = {cid: body for cid, body in todo.items() if cid not in out}
            if todo:
                log.warning("batch attempt %d: %d requests failed or never ran; sending them again", attempt,
                            len(todo))  # fmt: skip
        for cid in todo:  # still unanswered after every attempt: the request's own failure
            reason = failures.get(cid, "not answered by the batch")
            out[cid] = Completion("", None, 0, 0, error=f"{BATCH_FAILED}: {reason}")
        for cid, reservation in held.items():
            self.budget.settle(reservation, out[cid])
        return [out[cid] for cid in ids]

    def _run(self, todo: dict[str, dict[str, Any]], attempt: int) -> Results:
        """Every request of ``todo`` through batches (one per file within the limits); their results."""
        lines = [jsonl_line(cid, body) for cid, body in todo.items()]
        cids = list(todo)
        results = Results()
        groups = split_files(lines, self.options.batch_max_requests, self.options.batch_max_bytes)
        for group in groups:
            ids = [cids[i] for i in group]
            tokens = sum(_bound(todo[c]) for c in ids)
            with self._slot(tokens):
                got = self._one(batch_key(ids, attempt), ids, b"".join(lines[i] for i in group), attempt)
            results.bodies.update(got.bodies)
            results.failures.update(got.failures)
        return results

    def _slot(self, tokens: int) -> Any:
        """Hold ``tokens`` of the enqueued-token cap while a batch is out (no cap: nothing held)."""
        engine = self

        class Slot:
            def __enter__(self) -> None:
                cap = engine.options.max_enqueued_tokens
                with engine._enqueue:
                    while cap is not None and engine._enqueued and engine._enqueued + tokens > cap:
                        engine._enqueue.wait()
                    engine._enqueued += tokens

            def __exit__(self, *exc: object) -> None:
                with engine._enqueue:
                    engine._enqueued -= tokens
                    engine._enqueue.notify_all()

        return Slot()

    def _one(self, key: str, ids: list[str], data: bytes, attempt: int) -> Results:
        """One batch from the ledger's row to its results; never created twice."""
        entry = self.ledger.latest(key)
        if entry is None or entry.provider_id is None:
            found = self._find(key)
            if found is not None:
                log.info("batch %s: found on the provider (%s), not sent again", key, found.id)
                entry = self._entry(key, len(ids), attempt, found)
            else:
                entry = self._submit(key, ids, data, attempt)
            self.ledger.write(entry)
        else:
            log.info("batch %s (%s): %s in the ledger; waiting on it", key, entry.provider_id, entry.state)
        entry = self._wait(entry)
        output = self._content(entry.output_file_id)
        errors = self._content(entry.error_file_id)
        results = read_results(output, errors)
        if entry.state != "completed":
            for cid in ids:
                results.failures.setdefault(cid, f"the batch ended {entry.state}")
        return results

    def _submit(self, key: str, ids: list[str], data: bytes, attempt: int) -> BatchEntry:
        self.ledger.write(
            BatchEntry(key=key, run_id=self.run_id, state=UPLOADING, requests=len(ids), attempt=attempt)
        )
        upload = self.client.files.create(file=(f"{key}.jsonl", data, "application/jsonl"), purpose="batch")
        batch = self.client.batches.create(
            input_file_id=upload.id,
            endpoint=ENDPOINT,
            completion_window="24h",
            metadata={"reflectory_batch": key, "run_id": self.run_id[:512]},
        )
        log.info("batch %s: created %s with %d requests", key, batch.id, len(ids))
        return self._entry(key, len(ids), attempt, batch)

    def _find(self, key: str) -> Any:
        """The provider's batch with this key in its metadata (newest first), or None."""
        for batch in self.client.batches.list(limit=100):  # the client walks the pages
            if (batch.metadata or {}).get("reflectory_batch") == key:
                return batch
        return None

    def _entry(self, key: str, requests: int, attempt: int, batch: Any) -> BatchEntry:
        counts = batch.request_counts.model_dump() if getattr(batch, "request_counts", None) else {}
        return BatchEntry(
            key=key, run_id=self.run_id, state=batch.status, requests=requests, attempt=attempt,
            provider_id=batch.id, input_file_id=batch.input_file_id, output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id, counts=counts,
        )  # fmt: skip

    def _wait(self, entry: BatchEntry) -> BatchEntry:
        """Poll until the batch ends, backing off; every change of state goes to the ledger and the log
        (``finalizing`` is shown as such: the provider is writing the results, not hanging)."""
        wait = 0.0
        try:
            return self._poll(entry, wait)
        finally:
            with _WAITING_LOCK:
                _WAITING.pop(entry.key, None)

    def _poll(self, entry: BatchEntry, wait: float) -> BatchEntry:
        while not entry.done:
            with _WAITING_LOCK:
                done = entry.counts.get("completed", 0) + entry.counts.get("failed", 0)
                _WAITING[entry.key] = (entry.provider_id or "", entry.state, done, entry.requests)
            wait = next_poll(wait, self.options.batch_poll_s)
            time.sleep(wait)
            batch = self.client.batches.retrieve(entry.provider_id)
            seen = self._entry(entry.key, entry.requests, entry.attempt, batch)
            if (seen.state, seen.counts) != (entry.state, entry.counts):
                self.ledger.write(seen)
                done = seen.counts.get("completed", 0) + seen.counts.get("failed", 0)
                log.info(
                    "batch %s (%s): %s, %d of %d requests done",
                    entry.key, entry.provider_id, seen.state, done, entry.requests,
                )  # fmt: skip
            entry = seen
        return entry

    def _content(self, file_id: str | None) -> str:
        if not file_id:
            return ""
        return str(self.client.files.content(file_id).text)


def _bound(body: dict[str, Any]) -> int:
    """Tokens a batch line may count against the enqueued limit: its text's bytes plus max_tokens."""
    text = sum(len(str(m.get("content") or "").encode()) for m in body.get("messages", []))
    return text + int(body.get("max_tokens") or 0)
