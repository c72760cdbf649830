"""A run's shard jobs are made as the flow admits them, from a stream it reads once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasks.engine import ModelRole, Sampling
from tasks.shards import Item, ShardJob, ShardJobs

MODEL = ModelRole(spec="hf:tiny")
TEMPLATE = ShardJob(run_id="r", shard=0, pairs=(), teacher=MODEL, student=MODEL, sampling=Sampling())
HISTORY = (("user", "Hi."), ("assistant", "Hello."))


class Counted:
    """Items of a stream, counting how many were read."""

    def __init__(self, n: int) -> None:
        self.n, self.read = n, 0

    def __iter__(self) -> Iterator[tuple[Item, tuple[tuple[str, str], ...]]]:
        for i in range(self.n):
            self.read += 1
            yield (f"id{i}", f"q{i}", "", f"a{i}"), HISTORY if i % 3 == 0 else ()


def test_jobs_are_made_one_shard_at_a_time_from_the_stream() -> None:
    items = Counted(10)
    jobs = ShardJobs(items, 10, 4, TEMPLATE, source="in.jsonl")
    assert len(jobs) == 3 and items.read == 0  # nothing read before the first shard is asked for
    made = iter(jobs)
    first = next(made)
    assert (
        items.read == 4 and first.shard == 0 and [p[0] for p in first.pairs] == ["id0", "id1", "id2", "id3"]
    )
    assert first.histories == (("id0", HISTORY), ("id3", HISTORY)) and first.run_id == "r"
    rest = list(made)
    assert [j.shard for j in rest] == [1, 2] and [len(j.pairs) for j in rest] == [4, 2]
    assert jobs.conversations == 4  # ids 0, 3, 6, 9
    with pytest.raises(RuntimeError, match="made once"):
        iter(jobs)


def test_a_limit_reads_no_further_than_it() -> None:
    items = Counted(100)
    assert sum(len(j.pairs) for j in ShardJobs(items, 7, 4, TEMPLATE, source="in.jsonl")) == 7
    assert items.read <= 8


def test_an_input_that_lost_rows_while_the_run_read_it_is_an_error_naming_it() -> None:
    jobs = ShardJobs(Counted(5), 9, 4, TEMPLATE, source="data/in.jsonl")
    with pytest.raises(ValueError, match=r"data/in.jsonl changed while the run read it: .* 9 items, .* 5"):
        list(jobs)
