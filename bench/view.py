"""How fast the browser opens a big store: a million ``selected`` rows, pages timed over HTTP.

Builds a store whose run has ``--rows`` selected rows and as many ``scores`` rows (each pair's
original, which the search reads too), committed in shards through the store as a run commits
them; starts ``reflectory view`` on it, and times, over HTTP as a browser asks:
- the pairs page (the first page, sorted by IFD);
- a filtered and searched page (dropped pairs, an IFD range, words that a few pairs hold);
- the same two as JSON.
Each is the median of ``--repeat`` requests after one warm-up. The baseline in the same run is the
same question asked of the store directly with one SQL count (what any page must at least do).

    .venv/bin/python bench/view.py [--rows 1000000] [--shards 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.store import Store  # noqa: E402

RUN = "bench-view"
NEEDLE = "quokka lighthouse"  # in one pair of every 100,000


def build(path: Path, rows: int, shards: int) -> Store:
    store = Store(str(path), create=True)
    rng = np.random.default_rng(0)
    per = -(-rows // shards)
    words = np.array(["river", "stone", "cloud", "market", "violet", "engine", "harbor", "seven", "alpha"])
    for shard in range(shards):
        n = min(per, rows - shard * per)
        if n <= 0:
            break
        idx = np.arange(shard * per, shard * per + n)
        pick = rng.integers(0, len(words), size=(n, 3))
        text = [" ".join(w) for w in words[pick]]
        instruction = [f"Explain the {t} in detail ({i})." for t, i in zip(text, idx, strict=True)]
        output = [
            f"The {t} is described here." if i % 100_000 else f"A {NEEDLE} answer."
            for t, i in zip(text, idx, strict=True)
        ]
        ifd = rng.uniform(0.2, 1.4, n)
        kept = (ifd < 1) & (rng.uniform(size=n) < 0.4)
        table = pa.table({
            "run_id": pa.array([RUN] * n),
            "source_id": pa.array([f"{i:016x}" for i in idx]),
            "shard": pa.array([shard] * n, pa.int64()),
            "kept": pa.array(kept),
            "variant": pa.array(np.where(kept, "A", "ori")),
            "branch": pa.array(["original"] * n),
            "reason": pa.array(np.where(kept, "kept:A", "rifd_not_lower:A>=ori")),
            "instruction": pa.array(instruction),
            "input": pa.array([""] * n),
            "output": pa.array(output),
            "ifd_ppl": pa.array(ifd),
            "rifd_ppl": pa.array(rng.uniform(0.2, 1.4, n)),
            "scoring_version": pa.array(["scoring/v2"] * n),
            "teacher": pa.array(["vllm:teacher"] * n),
            "student": pa.array(["vllm:student"] * n),
            "prompt_version": pa.array(["v"] * n),
        })  # fmt: skip
        store.commit_shard("selected", table, run_id=RUN, stage="select", shard=shard)
        # Each pair's original (the ori variant's scores row): what the search reads beside the kept text.
        same = ("run_id", "source_id", "shard", "student", "instruction", "input", "ifd_ppl", "rifd_ppl")
        ori = pa.table({
            **{name: table[name] for name in same},
            "variant": pa.array(["ori"] * n),
            "output": pa.array([f"An original answer about the {t}." for t in text]),
        })  # fmt: skip
        store.commit_shard("scores", ori, run_id=RUN, stage="score", shard=shard)
    return store


@contextmanager
def viewer(store: Path, *, timeout_s: float) -> Iterator[httpx.Client]:
    """``reflectory view`` on ``store`` (a free port), and a client of it; stopped at the end."""
    cmd = [sys.executable, "-m", "flows.cli", "view", "--store", str(store), "--port", "0"]
    proc = subprocess.Popen(
        cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"(http://\S+?)/\s", line + " ").group(1)  # type: ignore[union-attr]
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            yield client
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def median_seconds(client: httpx.Client, path: str, params: dict[str, str], repeat: int) -> tuple[float, int]:
    client.get(path, params=params).raise_for_status()  # warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        times.append(time.perf_counter() - t0)
        r.raise_for_status()
    return statistics.median(times), len(r.content)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--store", default=None, help="reuse (or keep) the store here")
    args = ap.parse_args()
    path = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="view-bench-")) / "factory"
    t0 = time.perf_counter()
    store = Store(str(path)) if (path / "selected").exists() else build(path, args.rows, args.shards)
    built = time.perf_counter() - t0
    print(
        f"store with {args.rows:,} selected and {args.rows:,} scores rows in {args.shards} shards: "
        f"{built:.1f} s"
    )
    t0 = time.perf_counter()
    [(n,)] = store.sql(f"SELECT count(*) FROM selected WHERE run_id = '{RUN}' AND NOT kept").fetchall()
    sql_s = time.perf_counter() - t0
    with viewer(path, timeout_s=120) as client:
        filtered = {"kept": "false", "ifd_min": "0.5", "ifd_max": "1.2", "q": NEEDLE}
        cases = [
            ("pairs page", f"/runs/{RUN}/pairs", {}),
            ("filtered + searched page", f"/runs/{RUN}/pairs", filtered),
            ("pairs JSON", f"/api/runs/{RUN}/pairs", {}),
            ("filtered + searched JSON", f"/api/runs/{RUN}/pairs", filtered),
        ]
        ms = sql_s * 1000
        print(f"baseline: one SQL count of the dropped pairs ({n:,}) straight on the store: {ms:.0f} ms")
        for name, route, params in cases:
            seconds, size = median_seconds(client, route, params, args.repeat)
            verdict = "ok" if seconds <= 1.0 else "over 1 s"
            kib = size / 1024
            print(f"{name:>26}: {seconds * 1000:7.0f} ms ({kib:.0f} KiB, median of {args.repeat}; {verdict})")
        found = client.get(f"/api/runs/{RUN}/pairs", params=filtered).json()["total"]
        print(f"the search found {found} pairs holding {NEEDLE!r}")


if __name__ == "__main__":
    main()
