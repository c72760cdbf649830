"""The viewer never blocks its event loop: a slow page (DuckDB, matplotlib) runs in Starlette's thread
pool while a fast one is answered. Ordered by events, not by timing: the slow page waits until the
fast one has been answered, which can only happen if the loop was free to answer it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from flows.cli.interrupts import resume_command
from flows.view.app import create_app
from storage.browse import Browser
from storage.store import Store


def test_a_slow_page_does_not_hold_up_a_fast_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(str(tmp_path / "factory"), create=True)
    store.append("runs", [{"run_id": "r1", "flow": "recycle", "status": "completed"}])
    fast_answered = threading.Event()
    slow_saw_it = []

    def slow_failures(self: Browser, run_id: str) -> dict[str, object]:
        slow_saw_it.append(fast_answered.wait(timeout=20))
        return {"reflections": [], "scores": [], "traces": []}

    monkeypatch.setattr(Browser, "failures", slow_failures)
    app = create_app(store)

    async def both() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://viewer") as client:
            slow = asyncio.create_task(client.get("/api/runs/r1/failures"))
            await asyncio.sleep(0)  # the slow request is in its handler first
            fast = await client.get("/api/runs")
            fast_answered.set()
            return fast.status_code, (await slow).status_code

    assert asyncio.run(both()) == (200, 200)
    assert slow_saw_it == [True]


def test_the_resume_line_names_the_run_whatever_the_command_line_said() -> None:
    argv = ["run", "recycle", "-i", "a b.jsonl", "--run-id", "old", "--limit", "3"]
    assert resume_command("reflectory", "r-1", argv) == (
        "reflectory run recycle -i 'a b.jsonl' --limit 3 --run-id r-1"
    )
    assert resume_command("reflectory", "r-2", ["run", "traces", "--run-id=x"]) == (
        "reflectory run traces --run-id r-2"
    )
