"""The flow admits shards through its window: a shard job is made only when a shard in flight ends,
so the flow holds the window's jobs, never the whole input (real Prefect tasks, real Ray)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prefect import flow, task

from flows.shard_chains import run_shard_chains
from tasks.shards import ShardSummary

JOBS, WINDOW = 24, 4


class Watched:
    """Jobs made on demand; at each one made, how many were made but not yet finished."""

    def __init__(self) -> None:
        self.made = self.finished = 0
        self.most_open = 0
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return JOBS

    def __iter__(self) -> Iterator[int]:
        for n in range(JOBS):
            with self.lock:
                self.made += 1
                self.most_open = max(self.most_open, self.made - self.finished)
            yield n

    def done(self) -> None:
        with self.lock:
            self.finished += 1


WATCHED = Watched()


@task
def work(n: int) -> ShardSummary:
    WATCHED.done()
    return ShardSummary(stage="work", shard=n, rows=1, resumed=False, seconds=0.0)


@flow
def windowed() -> tuple[list[ShardSummary], dict[str, int]]:
    held: dict[str, int] = {}
    summaries, _, stopped = run_shard_chains(
        "windowed", "local", WATCHED, ["work"], lambda n: [work.submit(n)], {}, window=WINDOW, held=held
    )
    assert not stopped
    return summaries, held


def test_jobs_are_made_as_shards_in_flight_end_never_more_than_the_window_ahead() -> None:
    summaries, held = windowed()
    assert sorted(s.shard for s in summaries) == list(range(JOBS))
    assert WATCHED.made == WATCHED.finished == JOBS
    assert WATCHED.most_open <= WINDOW  # never more made than the window holds
    assert held["in_flight_max"] <= WINDOW and held["peak_rss_mb"] > 0
