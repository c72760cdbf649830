"""The step loop's own logic over a scripted offline engine (the real vLLM engine is exercised in
tests/integration/test_vllm_engine.py): requests admitted between steps, a refused request failing
alone, a broken engine failing everything it held and refusing new work."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from infra.engines.stream import EngineStopped, RequestRejected, StepLoop


@dataclass
class Out:
    request_id: str
    finished: bool
    text: str


class ScriptedEngine:
    """Each request needs ``steps`` steps (its prompt); an empty prompt is refused like vLLM refuses it."""

    def __init__(self, fail_at_step: int | None = None) -> None:
        self.left: dict[str, int] = {}
        self.added: list[tuple[int, str]] = []  # (step count when admitted, request id)
        self.steps = 0
        self.fail_at_step = fail_at_step
        self.lock = threading.Lock()

    def add_request(self, request_id: str, prompt: int, params: object) -> None:
        if prompt <= 0:
            raise ValueError("The decoder prompt cannot be empty\nmore detail")
        self.left[request_id] = prompt
        self.added.append((self.steps, request_id))

    def step(self) -> list[Out]:
        self.steps += 1
        if self.fail_at_step == self.steps:
            raise RuntimeError("device lost")
        out = []
        for rid in list(self.left):
            self.left[rid] -= 1
            if self.left[rid] == 0:
                del self.left[rid]
                out.append(Out(rid, True, f"done {rid}"))
        return out

    def has_unfinished_requests(self) -> bool:
        return bool(self.left)


def test_each_request_returns_when_it_is_done_not_when_its_call_is():
    engine = ScriptedEngine()
    loop = StepLoop(engine, capacity=4)
    long, short = loop.submit(50, None), loop.submit(1, None)
    assert short.result(timeout=5).output.text.startswith("done")
    assert not long.done() or engine.steps >= 50
    assert long.result(timeout=5).output.finished
    assert loop.stats.requests == 2 and loop.stats.steps >= 50


def test_a_refused_request_fails_alone_with_the_engines_first_line():
    loop = StepLoop(ScriptedEngine(), capacity=4)
    bad, good = loop.submit(0, None), loop.submit(2, None)
    with pytest.raises(RequestRejected, match=r"^The decoder prompt cannot be empty$"):
        bad.result(timeout=5)
    assert good.result(timeout=5).output.finished
    assert loop.stats.rejected == 1


def test_a_broken_engine_fails_what_it_held_and_refuses_new_work():
    loop = StepLoop(ScriptedEngine(fail_at_step=3), capacity=4)
    futures = [loop.submit(10, None) for _ in range(3)]
    for f in futures:
        with pytest.raises(EngineStopped, match="device lost"):
            f.result(timeout=5)
    with pytest.raises(EngineStopped):
        loop.submit(1, None)


def test_load_counts_running_up_to_capacity_and_the_rest_as_waiting():
    gate = threading.Event()

    class Slow(ScriptedEngine):
        def step(self) -> list[Out]:
            gate.wait(5)
            return super().step()

    loop = StepLoop(Slow(), capacity=2)
    futures = [loop.submit(1, None) for _ in range(5)]
    for _ in range(100):
        load = loop.load()
        if load["running"] + load["waiting"] == 5:
            break
        threading.Event().wait(0.01)
    assert load["running"] == 2 and load["waiting"] == 3 and load["capacity"] == 2
    gate.set()
    assert all(f.result(timeout=5).output.finished for f in futures)
