"""DuckDB query time through the store's views against read_parquet over the same files.

Writes 1M score rows in 25 shard commits through ``Store.commit_shard`` into a temporary store,
then times each query both ways, alternating, several times. Usage:
    python bench/store.py [--rows 1000000] [--shards 25] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa

from storage.sql import connect
from storage.store import Store

QUERIES = {
    "count": "SELECT count(*) FROM {t}",
    "group-by": "SELECT variant, avg(ifd_ppl), avg(rifd_ppl), count(*) FROM {t} GROUP BY variant",
    "float range filter": (
        "SELECT count(*), avg(loss_cond) FROM {t} WHERE ifd_ppl < 0.5 AND rifd_ppl BETWEEN 0.2 AND 0.4"
    ),
    "top-k": "SELECT source_id, ifd_ppl FROM {t} WHERE ifd_ppl < 1 ORDER BY ifd_ppl DESC LIMIT 100",
}


def shard_table(shard: int, n: int, rng: np.random.Generator) -> pa.Table:
    ifd = rng.gamma(4.0, 0.2, n)
    rifd = rng.gamma(4.0, 0.2, n)
    loss = rng.uniform(0.5, 4.0, n)
    return pa.table(
        {
            "run_id": ["bench"] * n,
            "source_id": [f"{shard:04d}-{i:07d}" for i in range(n)],
            "shard": np.full(n, shard),
            "variant": rng.choice(["ori", "Q", "A", "QA"], n),
            "student": ["hf:smollm2"] * n,
            "loss_cond": loss,
            "loss_direct": loss / ifd,
            "ifd_ppl": ifd,
            "rifd_ppl": rifd,
        }
    )


def timed_pair(first, second, repeat: int) -> tuple[float, float]:
    """Median times of two runs, alternated so that background load hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for run, out in ((first, times[0]), (second, times[1])):
            t0 = time.perf_counter()
            run()
            out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, create=True)
        per = args.rows // args.shards
        t0 = time.perf_counter()
        for shard in range(args.shards):
            store.commit_shard(
                "scores", shard_table(shard, per, rng), run_id="bench", stage="score", shard=shard
            )
        elapsed = time.perf_counter() - t0
        print(f"wrote {per * args.shards} rows in {args.shards} shard commits in {elapsed:.1f} s")
        session = connect(store)
        files = store.delta("scores").file_uris()  # type: ignore[union-attr]
        raw = duckdb.connect()
        file_list = ", ".join(f"'{f}'" for f in files)
        print(f"{len(files)} files; median of {args.repeat} runs each\n")
        print(f"{'query':<20} {'store view':>12} {'read_parquet':>14} {'ratio':>7}")
        ratios = []
        scan = f"read_parquet([{file_list}])"
        for name, sql in QUERIES.items():
            view, direct = timed_pair(
                lambda s=sql: session.sql(s.format(t="scores")).fetchall(),
                lambda s=sql: raw.sql(s.format(t=scan)).fetchall(),
                args.repeat,
            )
            ratios.append(view / direct)
            print(f"{name:<20} {view * 1000:>10.1f}ms {direct * 1000:>12.1f}ms {view / direct:>6.2f}x")
        print(f"\nworst ratio (store view / read_parquet): {max(ratios):.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()
