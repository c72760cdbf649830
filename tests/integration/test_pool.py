"""Engine pools on a real local Ray: a replica killed mid-batch is restarted and its batch retried,
and when retries run out the error names the replica and the batch.

The tiny model writes about 700 tokens for this prompt before its end-of-sequence token, about 2 s
a request here, so a SIGKILL sent 0.8 s after the call lands while a batch is running.
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

from infra.engines.base import ChatRequest, Completion, Sampling
from infra.pool import EnginePool, PoolConfig, PoolError

pytestmark = pytest.mark.slow

REQUESTS = [ChatRequest.user("Hello there")] * 3
GREEDY = Sampling(max_tokens=700, temperature=0)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    from infra.cluster import connect

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    connect(None)
    yield
    ray.shutdown()


def _pool(model: Path, retries: int, options: dict[str, Any]) -> EnginePool:
    """A pool of one replica; each test passes other options, so its replica is its own."""
    return EnginePool(
        PoolConfig(spec=f"hf:{model}", options=options, batch_size=1, max_batch_retries=retries)
    )


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
    time.sleep(0.8)
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
