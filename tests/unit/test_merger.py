"""A replica's batch merger: concurrent batches with the same key become one engine call, in order."""

from __future__ import annotations

import threading
import time

import pytest

from infra.merger import BatchMerger


class SlowEngine:
    """Records its calls; the first one waits for a gate, so that other batches queue behind it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, list[int]]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()  # the first call is inside the engine

    def run(self, method: str, arg: object, items: list[int]) -> list[int]:
        if not self.calls:
            self.entered.set()
            self.gate.wait(10)
        self.calls.append((method, arg, list(items)))
        if method == "fail":
            raise ValueError("engine failed")
        return [i * 10 for i in items]


def submit_all(
    merger: BatchMerger, batches: list[tuple[str, object, list[int]]]
) -> list[list[int] | Exception]:
    out: list[list[int] | Exception] = [[] for _ in batches]

    def one(k: int) -> None:
        try:
            out[k] = merger.submit(*batches[k])
        except Exception as exc:
            out[k] = exc

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(batches))]
    threads[0].start()
    # Until the first batch is inside the engine: queued behind it, the others are merged together
    # (waiting only for it to be submitted let the worker take the first with the others).
    assert merger.run.__self__.entered.wait(10)  # type: ignore[attr-defined]
    for t in threads[1:]:
        t.start()
    while merger.held < sum(len(b[2]) for b in batches):  # every batch waits at the replica
        time.sleep(0.001)
    merger.run.__self__.gate.set()  # type: ignore[attr-defined]
    for t in threads:
        t.join(10)
    return out


def test_waiting_batches_with_one_key_are_one_call_up_to_the_bound() -> None:
    engine = SlowEngine()
    merger = BatchMerger(engine.run, bound=5)
    out = submit_all(
        merger, [("g", "s", [1]), ("g", "s", [2, 3]), ("g", "s", [4, 5]), ("g", "t", [6]), ("g", "s", [7, 8])]
    )
    assert out == [[10], [20, 30], [40, 50], [60], [70, 80]]  # each caller gets its own slice
    # The first call, then [2,3]+[4,5] ([7,8] would pass the bound), then "t" apart, then [7,8].
    assert [c[2] for c in engine.calls] == [[1], [2, 3, 4, 5], [6], [7, 8]]
    assert merger.stats.calls == 4 and merger.stats.batches == 5 and merger.stats.peak_in_flight == 8


def test_unmergeable_keys_run_batch_by_batch() -> None:
    engine = SlowEngine()
    merger = BatchMerger(engine.run, bound=100, mergeable=lambda method, arg: arg != "sampled")
    submit_all(merger, [("g", "sampled", [1]), ("g", "sampled", [2]), ("g", "sampled", [3])])
    assert [c[2] for c in engine.calls] == [[1], [2], [3]]


def test_an_engine_error_reaches_every_caller_of_the_merged_call() -> None:
    engine = SlowEngine()
    merger = BatchMerger(engine.run, bound=10)
    out = submit_all(merger, [("g", None, [1]), ("fail", None, [2]), ("fail", None, [3])])
    assert out[0] == [10]
    assert all(isinstance(o, ValueError) for o in out[1:])
    with pytest.raises(ValueError):
        merger.submit("fail", None, [4])
    assert merger.submit("g", None, [5]) == [50]  # the replica keeps working
