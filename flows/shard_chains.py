"""Every shard's chain of Prefect tasks (one per stage) on Ray replicas, with a bar per stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from prefect.futures import PrefectFuture, as_completed

from flows.artifacts import StageProgress
from flows.progress import stages_progress
from infra.cluster import connect
from infra.pool import pools_occupancy, start_pool
from tasks.engine import ModelRole
from tasks.shards import ShardSummary


def run_shard_chains(
    flow: str,
    ray_address: str | None,
    jobs: Sequence[Any],
    stages: Sequence[str],
    submit: Callable[[Any], list[PrefectFuture[ShardSummary]]],
    seconds: dict[str, float],
    roles: Sequence[ModelRole] = (),
) -> tuple[list[ShardSummary], dict[str, dict[str, float]]]:
    """Submit every shard's chain of tasks; every summary, and the pools' occupancy per stage.
    ``seconds`` gets the wall time of joining Ray and of the shards. The replicas of every role start
    loading at once (a command has started them already; a deployment's run starts them here), and
    the run context that calls this releases them when the run ends."""
    t0 = time.perf_counter()
    connect(ray_address)
    for role in roles:
        start_pool(role)
    seconds["ray"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        with stages_progress(stages, len(jobs)) as advance:
            artifacts = StageProgress(flow, stages, len(jobs))
            chains = [submit(job) for job in jobs]
            stage_of = {id(f): i for chain in chains for i, f in enumerate(chain)}
            for done in as_completed([f for chain in chains for f in chain]):
                done.wait()  # its final state; ``state`` alone may ask the API, which lags
                if done.state.is_completed():
                    advance(stage_of[id(done)])
                    artifacts.advance(stage_of[id(done)])
            artifacts.close()
            # In stage order, so that a failure raises its own error, not a downstream "not run".
            for i in range(len(stages)):
                for chain in chains:
                    chain[i].result()
            return [future.result() for chain in chains for future in chain], pools_occupancy()
    finally:
        seconds["shards"] = time.perf_counter() - t0
