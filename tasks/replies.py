"""Replies kept by their content, so that one teacher pass serves every student (pure).

Selective Reflection-Tuning's student selects; the teacher's work does not depend on it. A reply is
addressed by everything that decides it: the model's identity (its spec and the options that change
what it writes), the messages, the sampling with its seed, the reply's form, and its token bound.
A run of any id that would send a request with the same address takes the stored reply instead, and
its row says which run asked for it (``reply_from``). Errors are never stored: a request that failed
is asked again. The judge's replies are kept the same way (docs/api-teacher.md, "One teacher pass, reused").

``ReplyCache`` wraps any engine; the store behind it (``ReplyStore``) is ``storage.replies``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tasks.engine import ChatRequest, Completion, Engine, ModelRole, Sampling

# Options that change how requests are sent, not what the model writes.
OPERATIONAL_OPTIONS = frozenset(
    {
        "api_key_env", "concurrency", "max_retries", "timeout_s", "token_budget", "max_cost", "rpm", "tpm",
        "score_batch", "threads", "batch", "batch_discount", "batch_attempts", "batch_max_requests",
        "batch_max_bytes", "batch_poll_s", "max_enqueued_tokens", "generation_batch", "max_batch",
        "batch_tokens", "max_pad_fraction", "projection_chunk", "gpu_memory_utilization", "max_num_seqs",
        "streaming", "cpu_offload_gb", "device", "device_map", "tensor_parallel_size",
        "pipeline_parallel_size",
    }
)  # fmt: skip


def model_identity(role: ModelRole) -> str:
    """The model as far as its replies go: spec and the options that change them."""
    options = {k: v for k, v in sorted(role.options.items()) if k not in OPERATIONAL_OPTIONS}
    return json.dumps({"spec": role.spec, "options": options}, sort_keys=True, default=str)


def reply_key(identity: str, request: ChatRequest, sampling: Sampling) -> str:
    """The address of a reply: sha256 of the model identity, messages, sampling, form and bound."""
    blob = json.dumps(
        {
            "model": identity,
            "messages": [dict(m) for m in request.messages],
            "sampling": sampling.model_dump(mode="json"),
            "form": asdict(request.form) if request.form is not None else None,
            "max_tokens": request.max_tokens,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class StoredReply:
    run_id: str
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    free: bool = False


class ReplyStore(Protocol):
    """Where replies are kept (``storage.replies.StoreReplies``)."""

    def lookup(self, keys: Sequence[str]) -> Mapping[str, StoredReply]: ...

    def save(self, rows: Sequence[dict[str, Any]]) -> None: ...


class ReplyCache:
    """An engine whose ``generate`` takes stored replies first and stores the new ones it gets.

    New replies are saved as soon as a call returns, before any shard commits, so a run stopped by
    its budget or killed between shards has kept what it paid for. ``fresh`` asks everything again
    (and stores the new replies beside the old).
    """

    def __init__(
        self, engine: Engine, role: ModelRole, replies: ReplyStore, run_id: str, *, fresh: bool = False
    ) -> None:
        self.engine = engine
        self.replies = replies
        self.run_id = run_id
        self.fresh = fresh
        self.identity = model_identity(role)
        self.asked = 0
        self.reused = 0
        self._lock = threading.Lock()

    @property
    def spec(self) -> str:
        return self.engine.spec

    def __getattr__(self, name: str) -> Any:  # prompt_format, target_logprobs, tokenizer, close, ...
        return getattr(self.engine, name)

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        keys = [reply_key(self.identity, r, sampling) for r in requests]
        stored = {} if self.fresh else self.replies.lookup(sorted(set(keys)))
        out: list[Completion | None] = [None] * len(requests)
        missing: list[int] = []
        for i, key in enumerate(keys):
            hit = stored.get(key)
            if hit is None:
                missing.append(i)
            else:
                # A reply this run asked for itself (an earlier attempt of the same run id) is its own.
                origin = hit.run_id if hit.run_id != self.run_id else None
                out[i] = Completion(
                    hit.text, hit.finish_reason, hit.prompt_tokens, hit.completion_tokens, free=hit.free,
                    reused_from=origin,
                )  # fmt: skip
        # A request asked twice within one call (two equal pairs) is sent once.
        first: dict[str, int] = {}
        send = [i for i in missing if first.setdefault(keys[i], i) == i]
        got = self.engine.generate([requests[i] for i in send], sampling) if send else []
        for i, completion in zip(send, got, strict=True):
            out[i] = completion
        for i in missing:
            if out[i] is None:  # the copy of a request sent once: the reply, and no tokens spent
                sent = out[first[keys[i]]]
                assert sent is not None
                out[i] = Completion(sent.text, sent.finish_reason, 0, 0, error=sent.error, free=sent.free)
        fresh = [
            _row(keys[i], self.run_id, self.spec, c)
            for i, c in zip(send, got, strict=True)
            if c.error is None
        ]
        if fresh:
            self.replies.save(fresh)
        with self._lock:
            self.asked += len(send)
            self.reused += len(requests) - len(send)
        return [c if c is not None else _missing() for c in out]


def _row(key: str, run_id: str, spec: str, c: Completion) -> dict[str, Any]:
    return {
        "key": key,
        "run_id": run_id,
        "model": spec,
        "text": c.text,
        "finish_reason": c.finish_reason,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "latency_s": c.latency_s,
        "free": c.free,
    }


def _missing() -> Completion:
    raise AssertionError("every request has a completion")
