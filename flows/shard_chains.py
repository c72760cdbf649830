"""Every shard's chain of Prefect tasks (one per stage) on Ray replicas, with a bar per stage."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prefect.futures import PrefectFuture

from flows.artifacts import StageProgress
from flows.progress import stages_progress
from infra.cluster import connect
from infra.engines.batch import waiting_batches
from infra.memory import peak_rss_mb, trim_heap
from infra.pool import pools_limits, pools_occupancy, start_pool
from tasks.engine import ModelRole
from tasks.limits import waiting_line
from tasks.runs import RunStopped
from tasks.shards import Jobs, ShardSummary


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


def window_size(roles: Sequence[ModelRole], jobs: int) -> int:
    """Shards in flight at once: four per replica of every role, at least eight, at most every shard.
    A shard's stages run one after another, so a shard in flight keeps one replica busy at a time:
    four per replica keep every stage's replicas fed while other shards are in other stages. Each
    shard in flight holds Prefect task runs and their threads in the flow's process; a shard waiting
    for admission holds nothing, so the flow's memory follows the window, not the input
    (docs/architecture.md)."""
    return max(1, min(jobs, max(8, 4 * sum(r.replicas for r in roles))))


def run_shard_chains(
    flow: str,
    ray_address: str | None,
    jobs: Jobs,
    stages: Sequence[str],
    submit: Callable[[Any], list[PrefectFuture[ShardSummary]]],
    seconds: dict[str, float],
    roles: Sequence[ModelRole] = (),
    window: int | None = None,
    held: dict[str, int] | None = None,
) -> tuple[list[ShardSummary], dict[str, dict[str, float]], list[RunStopped]]:
    """Every shard's chain of tasks, admitted through a window; every summary, the pools' occupancy
    per stage, and the shards that stopped on a budget (their chains end there; any other failure
    stops admitting shards and is raised once those in flight have ended, the earliest stage's first).
    ``seconds`` gets the wall time of joining Ray and of the shards, and ``held`` what the flow held:
    the most shards in flight at once and its process's peak RSS. The replicas of every role start
    loading at once (a command has started them already; a deployment's run starts them here), and
    the run context that calls this releases them when the run ends."""
    t0 = time.perf_counter()
    connect(ray_address)
    for role in roles:
        start_pool(role)
    seconds["ray"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    size = window or window_size(roles, len(jobs))
    held = {} if held is None else held
    held["in_flight_max"] = 0
    try:
        with stages_progress(stages, len(jobs), note=f"window {size}") as bars, watching_limits(bars.note):
            artifacts = StageProgress(flow, stages, len(jobs))
            waiting = iter(jobs)  # made as they are admitted (``ShardJobs``): the flow holds the window
            unadmitted = len(jobs)
            in_flight: dict[int, tuple[int, int]] = {}  # id(future) -> (chain, stage)
            chains: dict[int, list[PrefectFuture[ShardSummary]]] = {}
            left: dict[int, int] = {}  # futures of each chain not done yet
            summaries: list[tuple[int, int, ShardSummary]] = []
            stopped: list[RunStopped] = []
            failures: list[tuple[int, int, BaseException]] = []
            admitted = ended = 0

            finished: queue.SimpleQueue[PrefectFuture[ShardSummary]] = queue.SimpleQueue()

            def admit() -> None:
                nonlocal admitted, unadmitted
                while unadmitted and len(chains) < size and not failures:
                    job = next(waiting, None)
                    if job is None:
                        break
                    unadmitted -= 1
                    chain = submit(job)
                    chains[admitted], left[admitted] = chain, len(chain)
                    for i, future in enumerate(chain):
                        in_flight[id(future)] = (admitted, i)
                        future.add_done_callback(finished.put)
                    admitted += 1
                held["in_flight_max"] = max(held["in_flight_max"], len(chains))
                held["peak_rss_mb"] = peak_rss_mb()
                bars.standing(
                    f"window {size}: {len(chains)} shards in flight, {unadmitted} waiting; "
                    f"flow process peak {held['peak_rss_mb']:,} MB"
                )

            admit()
            while chains:
                done = finished.get()
                done.wait()  # its final state; ``state`` alone may ask the API, which lags
                c, i = in_flight.pop(id(done))
                if done.state.is_completed():
                    bars.advance(i)
                    artifacts.advance(i)
                left[c] -= 1
                if left[c] == 0:  # the chain has ended: keep its summaries, release its futures
                    _collect(c, chains.pop(c), summaries, stopped, failures)
                    del left[c]
                    ended += 1
                    if ended % size == 0:  # a window's worth of shards freed: give the pages back
                        trim_heap()
                    admit()
            artifacts.close()
            if failures:  # in stage order: a failure's own error, not a downstream "not run"
                raise min(failures, key=lambda f: (f[1], f[0]))[2]
            summaries.sort(key=lambda s: (s[1], s[0]))
            return [s for _, _, s in summaries], pools_occupancy(), stopped
    finally:
        seconds["shards"] = time.perf_counter() - t0


def _collect(
    c: int,
    chain: list[PrefectFuture[ShardSummary]],
    summaries: list[tuple[int, int, ShardSummary]],
    stopped: list[RunStopped],
    failures: list[tuple[int, int, BaseException]],
) -> None:
    """A finished chain's summaries in stage order, up to a budget stop or its first failure."""
    for i, future in enumerate(chain):
        try:
            summaries.append((c, i, future.result()))
        except RunStopped as exc:
            stopped.append(exc)
            return
        except Exception as exc:
            failures.append((c, i, exc))
            return
