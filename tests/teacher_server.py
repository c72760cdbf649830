"""An OpenAI-compatible teacher with a provider's per-minute limits, for tests and bench/ratelimit.py.

It serves ``/v1/models`` and ``/v1/chat/completions`` over real HTTP on 127.0.0.1 (a thread, or
``python -m tests.teacher_server`` as its own process). Like OpenAI it:

- counts a request's prompt tokens (about four characters each, plus four per message) plus its
  ``max_tokens`` against tokens per minute when the request arrives, and one against requests per
  minute; both refill continuously at limit/60 a second;
- states its limits only in ``x-ratelimit-limit-*``, ``-remaining-*`` and ``-reset-*`` headers on
  every answer, and answers 429 past them (naming the limit; ``retry-after`` only if asked);
- fills a ``response_format`` JSON schema with text made from the prompt, so a teacher's reply
  parses, and writes a line of scores where no schema is given (a judge).

It also serves OpenAI's Batch API: ``/v1/files`` (a multipart upload with ``purpose=batch``, and
each file's content) and ``/v1/batches`` (create, retrieve, list by pages). A batch moves through
``validating``, ``in_progress`` and ``finalizing`` to ``completed`` on a thread, each state held
``batch_step_s``; ``batch_fail_every=k`` fails every k-th request of a batch the first time it is
sent (into the error file), as a provider's batch fails some of its requests.

Every answered request is recorded with a key of its content, so a test can check that nothing was
answered twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.local_http import JsonHandler, serving


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def request_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class Limits:
    """The server's per-minute limits and what is left of them (a continuous refill)."""

    rpm: int
    tpm: int
    full: float = 1.0  # how full the limits are at the first request (below 1: the key is in use)
    requests_left: float = -1.0
    tokens_left: float = -1.0
    at: float | None = None  # the limits start counting at the first request

    def __post_init__(self) -> None:
        self.requests_left, self.tokens_left = self.full * self.rpm, self.full * self.tpm

    def refill(self) -> None:
        now = time.monotonic()
        dt, self.at = (0.0 if self.at is None else now - self.at), now
        self.requests_left = min(self.rpm, self.requests_left + dt * self.rpm / 60)
        self.tokens_left = min(self.tpm, self.tokens_left + dt * self.tpm / 60)

    def headers(self) -> dict[str, str]:
        def reset(left: float, limit: int) -> str:
            return f"{max(0.0, (limit - left) * 60 / limit):.3f}s"

        return {
            "x-ratelimit-limit-requests": str(self.rpm),
            "x-ratelimit-limit-tokens": str(self.tpm),
            "x-ratelimit-remaining-requests": str(max(0, int(self.requests_left))),
            "x-ratelimit-remaining-tokens": str(max(0, int(self.tokens_left))),
            "x-ratelimit-reset-requests": reset(self.requests_left, self.rpm),
            "x-ratelimit-reset-tokens": reset(self.tokens_left, self.tpm),
        }


@dataclass
class TeacherServer:
    url: str = ""
    limits: Limits | None = None
    answered: list[dict[str, Any]] = field(default_factory=list)  # {key, at, tokens}
    throttled: int = 0
    retry_after: bool = False
    latency_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # in creation order
    batch_step_s: float = 0.3
    batch_fail_every: int = 0
    batch_failed: list[str] = field(default_factory=list)  # custom ids failed on purpose
    uploads: int = 0

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chat completion for ``body``, recorded as answered."""
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) + 4 for m in body["messages"])
        text = _reply(body)
        completion_tokens = min(count_tokens(text), int(body.get("max_tokens") or 16))
        with self.lock:
            self.answered.append(
                {
                    "key": request_key(body),
                    "at": time.monotonic(),
                    "counted": prompt_tokens + int(body.get("max_tokens") or 16),
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                }
            )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return {"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": [choice],
                "usage": usage}  # fmt: skip

    def run_batch(self, batch_id: str) -> None:
        """Move a batch through its states and answer its requests (a thread per batch)."""
        batch = self.batches[batch_id]
        lines = [
            json.loads(line) for line in self.files[batch["input_file_id"]].decode().splitlines() if line
        ]
        for status in ("in_progress", "finalizing"):
            time.sleep(self.batch_step_s)
            batch["status"] = status
            batch["request_counts"] = {"total": len(lines), "completed": 0, "failed": 0}
        out, errors = [], []
        for n, line in enumerate(lines, start=1):
            custom_id = line["custom_id"]
            fail = (
                self.batch_fail_every
                and n % self.batch_fail_every == 0
                and custom_id not in self.batch_failed
            )
            if fail:
                self.batch_failed.append(custom_id)
                error = {"code": "server_error", "message": "The model had an error processing this request."}
                errors.append({"id": f"req-{n}", "custom_id": custom_id, "response": None, "error": error})
            else:
                response = {"status_code": 200, "request_id": f"req-{n}", "body": self.answer(line["body"])}
                out.append({"id": f"req-{n}", "custom_id": custom_id, "response": response, "error": None})
        time.sleep(self.batch_step_s)
        with self.lock:
            for name, rows in (("output_file_id", out), ("error_file_id", errors)):
                if rows:
                    file_id = f"file-{len(self.files)}"
                    self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    batch[name] = file_id
            batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}
            batch["status"] = "completed"

    def tokens_served(self) -> int:
        """Prompt plus completion tokens of every answered request (what a provider bills)."""
        return sum(a["prompt_tokens"] + a["completion_tokens"] for a in self.answered)

    def counted_tokens(self) -> int:
        """Tokens counted against the limit: prompt plus max_tokens of every answered request."""
        return sum(a["counted"] for a in self.answered)

    def answered_twice(self) -> int:
        keys = [a["key"] for a in self.answered]
        return len(keys) - len(set(keys))


def _fill(schema: dict[str, Any], prompt: str, max_chars: int) -> dict[str, str]:
    """Each required string property with text drawn from the prompt, within its maxLength."""
    words = " ".join(prompt.split()[-40:]) or "an answer"
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:8]  # replies to different prompts differ
    out = {}
    for name in schema.get("required", list(schema.get("properties", {}))):
        prop = schema["properties"][name]
        text = f"A careful {name.replace('_', ' ')} ({tag}): {words}"
        out[name] = text[: max(1, min(int(prop.get("maxLength", max_chars)), max_chars))]
    return out


def _reply(body: dict[str, Any]) -> str:
    prompt = str(body["messages"][-1].get("content") or "")
    max_chars = 4 * int(body.get("max_tokens") or 256) - 64
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return json.dumps(_fill(fmt["json_schema"]["schema"], prompt, max(16, max_chars // 4)))
    return "8 6\nThe first answer is more complete."


class _Handler(JsonHandler):
    state: TeacherServer

    def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.send_json(code, body, headers)

    def do_GET(self) -> None:
        state = self.state
        path, _, query = self.path.partition("?")
        parts = path.rstrip("/").split("/")
        if parts[-1] == "batches":  # a page of batches, newest first, after a cursor
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            with state.lock:
                listed = list(reversed(state.batches.values()))
            if "after" in params:
                ids = [b["id"] for b in listed]
                listed = listed[ids.index(params["after"]) + 1 :] if params["after"] in ids else []
            limit = int(params.get("limit", 20))
            page = listed[:limit]
            self._send(200, {"object": "list", "data": page, "has_more": len(listed) > limit,
                             "first_id": page[0]["id"] if page else None,
                             "last_id": page[-1]["id"] if page else None})  # fmt: skip
        elif len(parts) >= 2 and parts[-2] == "batches" and parts[-1] in state.batches:
            self._send(200, state.batches[parts[-1]])
        elif parts[-1] == "content" and parts[-2] in state.files:
            data = state.files[parts[-2]]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path.rstrip("/").endswith("/models"):
            self._send(
                200, {"object": "list", "data": [{"id": "teacher", "object": "model", "owned_by": "test"}]}
            )
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        state = self.state
        path = self.path.rstrip("/")
        if path.endswith("/files"):
            self._upload(raw)
            return
        if path.endswith("/batches"):
            self._create_batch(json.loads(raw))
            return
        if not path.endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found"}})
            return
        body = json.loads(raw)
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) + 4 for m in body["messages"])
        counted = prompt_tokens + int(body.get("max_tokens") or 16)
        headers: dict[str, str] = {}
        with state.lock:
            limits = state.limits
            if limits is not None:
                limits.refill()
                over = (
                    "requests"
                    if limits.requests_left < 1
                    else "tokens"
                    if limits.tokens_left < counted
                    else None
                )
                if over is None:
                    limits.requests_left -= 1
                    limits.tokens_left -= counted
                headers = limits.headers()
                if over is not None:
                    state.throttled += 1
                    if state.retry_after:
                        rate = (limits.rpm if over == "requests" else limits.tpm) / 60
                        short = 1 if over == "requests" else counted - limits.tokens_left
                        headers["retry-after"] = f"{max(0.0, short / rate):.3f}"
                    message = f"Rate limit reached for teacher on {over} per min. Please try again later."
                    self._send(
                        429,
                        {"error": {"message": message, "type": over, "code": "rate_limit_exceeded"}},
                        headers,
                    )
                    return
        if state.latency_s:
            time.sleep(state.latency_s)
        self._send(200, state.answer(body), headers)

    def _upload(self, raw: bytes) -> None:
        """A multipart upload (``file`` and ``purpose`` fields), as the openai client sends it."""
        from email.parser import BytesParser
        from email.policy import HTTP

        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw
        )
        fields = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                  for part in message.iter_parts()}  # fmt: skip
        if fields.get("purpose", b"").decode() != "batch":
            self._send(400, {"error": {"message": "purpose must be batch"}})
            return
        with self.state.lock:
            file_id = f"file-{len(self.state.files)}"
            self.state.files[file_id] = fields["file"]
            self.state.uploads += 1
        self._send(200, {"id": file_id, "object": "file", "bytes": len(fields["file"]), "created_at": 0,
                         "filename": "batch.jsonl", "purpose": "batch", "status": "processed"})  # fmt: skip

    def _create_batch(self, body: dict[str, Any]) -> None:
        state = self.state
        if body.get("input_file_id") not in state.files:
            self._send(400, {"error": {"message": "no such file"}})
            return
        with state.lock:
            batch_id = f"batch_{len(state.batches)}"
            batch = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                "status": "validating", "output_file_id": None, "error_file_id": None,
                "created_at": int(time.time()), "metadata": body.get("metadata") or {},
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
            }  # fmt: skip
            state.batches[batch_id] = batch
        threading.Thread(target=state.run_batch, args=(batch_id,), daemon=True).start()
        self._send(200, dict(batch))


@contextmanager
def teacher_server(
    rpm: int | None = None,
    tpm: int | None = None,
    *,
    full: float = 1.0,
    retry_after: bool = False,
    latency_s: float = 0.0,
    batch_step_s: float = 0.3,
    batch_fail_every: int = 0,
) -> Iterator[TeacherServer]:
    """A teacher on 127.0.0.1 (limits only where rpm and tpm are given, ``full`` at start)."""
    state = TeacherServer(
        limits=Limits(rpm, tpm, full) if rpm and tpm else None,
        retry_after=retry_after,
        latency_s=latency_s,
        batch_step_s=batch_step_s,
        batch_fail_every=batch_fail_every,
    )
    with serving(type("Handler", (_Handler,), {"state": state})) as url:
        state.url = f"{url}/v1"
        yield state
