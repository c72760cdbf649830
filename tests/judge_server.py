"""An OpenAI-compatible chat server whose replies a test writes: a judge with known verdicts.

It serves ``/v1/models`` and ``/v1/chat/completions`` over real HTTP on 127.0.0.1 and records every
request, so a test checks what the product sent (both orders of every item) and what it made of the
replies. ``reply(answer_1, answer_2, question)`` gives the judge's text for the answers in the order
shown; the answers are read back from the reference prompt's markers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[str, str, str], str]


def shown(prompt: str) -> tuple[str, str, str]:
    """(question, answer shown first, answer shown second) of a reference judge prompt."""

    def between(start: str, end: str) -> str:
        return prompt.split(start, 1)[1].split(end, 1)[0]

    return (
        between("[Question]\n", "\n\n[The Start of Assistant 1's Answer]"),
        between("[The Start of Assistant 1's Answer]\n", "\n\n[The End of Assistant 1"),
        between("[The Start of Assistant 2's Answer]\n", "\n\n[The End of Assistant 2"),
    )


@dataclass
class JudgeServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    def prompts(self) -> list[tuple[str, str, str]]:
        return [shown(r["messages"][-1]["content"]) for r in self.requests]


@contextmanager
def judge_server(reply: Reply, model: str = "judge") -> Iterator[JudgeServer]:
    lock = threading.Lock()
    state = JudgeServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                listed = [{"id": model, "object": "model", "owned_by": "test"}]
                self._send(200, {"object": "list", "data": listed})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": "not found"}})
                return
            with lock:
                state.requests.append(body)
            question, first, second = shown(body["messages"][-1]["content"])
            text = reply(first, second, question)
            self._send(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
                },
            )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
