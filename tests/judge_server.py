"""An OpenAI-compatible chat server whose replies a test writes: a judge with known verdicts.

It serves ``/v1/models`` and ``/v1/chat/completions`` over real HTTP on 127.0.0.1 and records every
request, so a test checks what the product sent (both orders of every item) and what it made of the
replies. ``reply(answer_1, answer_2, question)`` gives the judge's text for the answers in the order
shown; the answers are read back from the reference prompt's markers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.local_http import JsonHandler, serving

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

    class Handler(JsonHandler):
        def _send(self, code: int, body: dict[str, Any]) -> None:
            self.send_json(code, body)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                listed = [{"id": model, "object": "model", "owned_by": "test"}]
                self._send(200, {"object": "list", "data": listed})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = self.read_json()
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

    with serving(Handler) as url:
        state.url = f"{url}/v1"
        yield state
