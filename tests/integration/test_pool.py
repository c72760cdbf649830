"""Engine pools on a real local Ray: a replica killed mid-batch is restarted and its batch retried,
and when retries run out the error names the replica and the batch.

The kill lands inside a batch by construction: the test waits until the replica reports a batch in
flight (its own state, asked through a spare actor thread), then sends SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.pool import EnginePool, PoolError
from tasks.engine import ChatRequest, Completion, ModelRole, Sampling

pytestmark = pytest.mark.slow

REQUESTS = [ChatRequest.user("Hello there")] * 3
GREEDY = Sampling(max_tokens=700, temperature=0)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    from infra.cluster import connect

    connect(None)
    yield
    ray.shutdown()


def _pool(model: Path, retries: int, options: dict[str, Any]) -> EnginePool:
    """A pool of one replica; each test passes other options, so its replica is its own."""
    return EnginePool(ModelRole(spec=f"hf:{model}", options=options, batch_size=1, max_batch_retries=retries))


def wait_for_a_batch_in_flight(pool: EnginePool, timeout_s: float = 120) -> None:
    import ray

    deadline = time.monotonic() + timeout_s
    while ray.get(pool.actors[0].stats.remote())["in_flight"] == 0:
        assert time.monotonic() < deadline, "the replica never received a batch"
        time.sleep(0.05)


def _generate_while_killing(pool: EnginePool) -> tuple[list[Completion] | None, BaseException | None]:
    """Run ``generate`` in a thread and SIGKILL the replica's process while its first batch runs."""
    out: dict[str, Any] = {}

    def call() -> None:
        try:
            out["result"] = pool.generate(REQUESTS, GREEDY)
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    worker = threading.Thread(target=call)
    worker.start()
    wait_for_a_batch_in_flight(pool)
    os.kill(pool.pids[0], signal.SIGKILL)
    worker.join(300)
    assert not worker.is_alive()
    return out.get("result"), out.get("error")


def test_a_killed_replica_is_restarted_and_its_batch_retried(local_ray: None, tiny_model_path: Path) -> None:
    pool = _pool(tiny_model_path, retries=2, options={})
    try:
        expected = [c.text for c in pool.generate(REQUESTS, GREEDY)]
        assert pool.retried == 0
        result, error = _generate_while_killing(pool)
        assert error is None, error
        assert result is not None and [c.text for c in result] == expected  # nothing lost, same outputs
        assert pool.retried >= 1  # the batch in flight went to the restarted replica
        assert pool.pids[0] != pool.pids_at_start[0]
    finally:
        pool.close()


def test_when_retries_run_out_the_error_names_the_replica_and_batch(
    local_ray: None, tiny_model_path: Path
) -> None:
    pool = _pool(tiny_model_path, retries=0, options={"dtype": "float32"})
    try:
        result, error = _generate_while_killing(pool)
        assert result is None and isinstance(error, PoolError)
        assert re.search(r"batch [0-2] \(1 requests\) of generate failed 1 times", str(error))
        assert f"on replica {pool.names[0]}" in str(error)
    finally:
        pool.close()


def test_concurrent_batches_from_several_shards_are_merged_with_the_same_outputs(
    local_ray: None, tiny_model_path: Path
) -> None:
    """Four shards' batches wait while the replica is busy; its engine then runs them as one call."""
    import ray

    pool = EnginePool(
        ModelRole(spec=f"hf:{tiny_model_path}", options={"threads": 1}, batch_size=2, merge_bound=8)
    )
    shards = [
        [ChatRequest.user(f"{word} number {i} of shard {s}") for i, word in enumerate(("Hello", "What is"))]
        for s in range(4)
    ]
    sampling = Sampling(max_tokens=24, temperature=0)
    try:
        alone = [[c.text for c in pool.generate(batch, sampling)] for batch in shards]
        calls_alone = pool.stats()[0]["calls"]
        assert calls_alone == 4  # one batch at a time: one engine call each

        busy = threading.Thread(target=pool.generate, args=(REQUESTS[:1], GREEDY))
        busy.start()
        wait_for_a_batch_in_flight(pool)  # the replica is inside a long call: new batches must wait
        merged: dict[int, list[str]] = {}

        def shard(s: int) -> None:
            merged[s] = [c.text for c in pool.generate(shards[s], sampling)]

        threads = [threading.Thread(target=shard, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while ray.get(pool.actors[0].stats.remote())["in_flight"] < 1 + 8:
            assert time.monotonic() < deadline, "the shards' batches never reached the replica"
            time.sleep(0.02)
        busy.join(300)
        for t in threads:
            t.join(300)
        stats = pool.stats()[0]
        assert stats["calls"] - calls_alone == 2  # the long call, then the four batches as one
        assert stats["peak_in_flight"] >= 9
        assert [merged[s] for s in range(4)] == alone
    finally:
        pool.close()
