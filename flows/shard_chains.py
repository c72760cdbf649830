"""Every shard's chain of Prefect tasks (one per stage) on Ray replicas, with a bar per stage."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prefect.futures import PrefectFuture, as_completed

from flows.artifacts import StageProgress
from flows.progress import stages_progress
from infra.cluster import connect
from infra.engines.batch import waiting_batches
from infra.pool import pools_limits, pools_occupancy, start_pool
from tasks.engine import ModelRole
from tasks.limits import waiting_line
from tasks.runs import RunStopped
from tasks.shards import ShardSummary


@contextmanager
def watching_limits(note: Callable[[str], None], every_s: float = 1.0) -> Iterator[None]:
    """Show, under the bars, which provider limit the run waits on (a thread asks the pools' limiters)."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            try:
                lines = [line for spec, s in pools_limits().items() if (line := waiting_line(spec, s))]
            except Exception:  # a view: a limiter gone (the run ending) shows nothing
                lines = []
            if batches := waiting_batches():
                lines.append(batches)
            note("; ".join(lines))

    thread = threading.Thread(target=watch, name="limits-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        note("")


def run_shard_chains(
    flow: str,
    ray_address: str | None,
    jobs: Sequence[Any],
    stages: Sequence[str],
    submit: Callable[[Any], list[PrefectFuture[ShardSummary]]],
    seconds: dict[str, float],
    roles: Sequence[ModelRole] = (),
) -> tuple[list[ShardSummary], dict[str, dict[str, float]], list[RunStopped]]:
    """Submit every shard's chain of tasks; every summary, the pools' occupancy per stage, and the
    shards that stopped on a budget (their chains end there; any other failure is raised).
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
        with stages_progress(stages, len(jobs)) as bars, watching_limits(bars.note):
            artifacts = StageProgress(flow, stages, len(jobs))
            chains = [submit(job) for job in jobs]
            stage_of = {id(f): i for chain in chains for i, f in enumerate(chain)}
            for done in as_completed([f for chain in chains for f in chain]):
                done.wait()  # its final state; ``state`` alone may ask the API, which lags
                if done.state.is_completed():
                    bars.advance(stage_of[id(done)])
                    artifacts.advance(stage_of[id(done)])
            artifacts.close()
            # In stage order, so that a failure raises its own error, not a downstream "not run".
            summaries: list[ShardSummary] = []
            stopped: dict[int, RunStopped] = {}
            for i in range(len(stages)):
                for c, chain in enumerate(chains):
                    if c in stopped:
                        continue
                    try:
                        summaries.append(chain[i].result())
                    except RunStopped as exc:
                        stopped[c] = exc
            return summaries, pools_occupancy(), list(stopped.values())
    finally:
        seconds["shards"] = time.perf_counter() - t0
