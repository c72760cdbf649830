"""Store behaviours shared by the local and the S3 tests (real Delta tables in both)."""

from __future__ import annotations

import multiprocessing as mp
import time

from storage.store import Store


def rows(shard: int, n: int = 3, run_id: str = "r1") -> list[dict]:
    return [
        {"run_id": run_id, "source_id": f"s{shard}-{i}", "shard": shard, "variant": "ori", "ifd_ppl": 0.1 * i}
        for i in range(n)
    ]


def shard_committed_twice_appears_once(store: Store) -> None:
    assert store.commit_shard("scores", rows(0), run_id="r1", stage="score", shard=0) is True
    assert store.commit_shard("scores", rows(0), run_id="r1", stage="score", shard=0) is False
    # Another run or stage may commit its own shard 0.
    assert store.commit_shard("scores", rows(0, run_id="r2"), run_id="r2", stage="score", shard=0) is True
    ids = store.sql("SELECT source_id FROM scores WHERE run_id = 'r1'").fetchall()
    assert sorted(i for (i,) in ids) == ["s0-0", "s0-1", "s0-2"]
    # A shard reads back from its own files; one never committed is None, not an empty shard.
    back = store.read_shard("scores", "r2", "score", 0)
    assert back is not None and sorted(r["source_id"] for r in back) == ["s0-0", "s0-1", "s0-2"]
    assert {r["run_id"] for r in back} == {"r2"}
    assert store.read_shard("scores", "r1", "score", 7) is None


def _writer(uri: str, storage_options: dict, shards: list[int]) -> None:
    store = Store(uri, storage_options, create=True)
    for shard in shards:
        store.commit_shard("scores", rows(shard), run_id="r1", stage="score", shard=shard)
        # Every writer also retries shard 0, as a crashed-and-rerun task would.
        store.commit_shard("scores", rows(0), run_id="r1", stage="score", shard=0)


def concurrent_writers_lose_nothing(store: Store, n_procs: int = 4, per_proc: int = 3) -> None:
    ctx = mp.get_context("spawn")  # never fork after deltalake is used
    shards = [[1 + p * per_proc + k for k in range(per_proc)] for p in range(n_procs)]
    procs = [ctx.Process(target=_writer, args=(store.uri, store.storage_options, s)) for s in shards]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    got = store.sql("SELECT shard, count(*) FROM scores GROUP BY shard ORDER BY shard").fetchall()
    assert got == [(s, 3) for s in range(n_procs * per_proc + 1)], got


def time_travel_returns_old_rows(store: Store) -> None:
    store.append("seeds", [{"run_id": "r", "source_id": "a", "instruction": "i", "output": "o"}])
    v0 = store.version("seeds")
    # Object stores time commits by last-modified, to the second: leave a gap on both sides.
    time.sleep(1.1)
    before = time.time()
    time.sleep(1.1)
    store.append("seeds", [{"run_id": "r", "source_id": "b", "instruction": "i", "output": "o"}])
    assert store.table("seeds", version=v0).column("source_id").to_pylist() == ["a"]
    assert store.sql(f"SELECT count(*) FROM seeds@v{v0}").fetchall() == [(1,)]
    assert store.sql("SELECT count(*) FROM seeds").fetchall() == [(2,)]
    from datetime import UTC, datetime

    as_of = datetime.fromtimestamp(before, UTC)
    assert store.table("seeds", as_of=as_of).num_rows == 1
