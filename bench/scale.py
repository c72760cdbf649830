"""A recycle run at a dataset's size: throughput, memory per process, files per table, reads.

Runs ``reflectory run recycle`` on the tiny local Llama (so orchestration, not the model, is what is
measured) over ``--pairs`` distinct pairs, as ``bench/overhead.py`` does, and prints:

- pairs per second (start to exit, Ray's start, the model loads and the run's compaction included);
- the peak RSS of the flow process and of each engine replica (sampled every 0.5 s);
- the files of each table before and after the run's own compaction (``counts_json.compacted``);
- the time of one SQL query over the run, on each table's last version before the compaction
  (``selected@vN``: its small files) and on the compacted one: the baseline in the same run,
  and the two answers compared;
- the time of the viewer's pairs page of the run (``reflectory view``, over HTTP, median of 5).

Usage (Alpaca's size takes most of an hour on 2 cores):
    OMP_WAIT_POLICY=PASSIVE python bench/scale.py --pairs 52002 [--replicas 2] [--shard-size 64]
        [--keep DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from overhead import write_pairs
from view import median_seconds, viewer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.store import Store  # noqa: E402

RUN = "scale"
QUERY = (
    "SELECT variant, count(*) AS pairs, round(avg(ifd_ppl), 6) AS ifd, round(avg(rifd_ppl), 6) AS rifd "
    "FROM {table} WHERE run_id = ? GROUP BY variant ORDER BY variant"
)


class Peaks:
    """Peak RSS of a process and of each engine replica below it (Ray's actor processes are named
    ``ray::EngineReplica``), sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.flow = 0
        self.replicas: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                self.flow = max(self.flow, root.memory_info().rss)
                for child in root.children(recursive=True):
                    try:
                        if "EngineReplica" in " ".join(child.cmdline()):
                            rss = child.memory_info().rss
                            self.replicas[child.pid] = max(self.replicas.get(child.pid, 0), rss)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
            except psutil.NoSuchProcess:
                return
            time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_flow(
    model: Path, inp: Path, store: Path, work: Path, args: argparse.Namespace
) -> tuple[float, Peaks]:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        PREFECT_HOME=str(work / "prefect-home"),
        OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    )
    replicas = ["--teacher-replicas", str(args.replicas), "--student-replicas", str(args.replicas)]
    cmd = [
        sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(inp), "-s", str(store),
        "--teacher", f"hf:{model}", "--student", f"hf:{model}", "--run-id", RUN,
        "--shard-size", str(args.shard_size), "--max-tokens", str(args.max_tokens), "--free-text",
        *(replicas if args.replicas > 1 else []),
    ]  # fmt: skip
    with (work / "flow.log").open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        peaks = Peaks(proc.pid)
        code = proc.wait()
        seconds = time.perf_counter() - t0
    peaks.stop()
    if code != 0:
        raise SystemExit(f"the flow failed ({code}); log: {work / 'flow.log'}")
    return seconds, peaks


def timed_query(store: Store, table: str) -> tuple[float, list[tuple]]:
    """Seconds of one query (a fresh connection each time: what a command pays), median of 3."""
    times, rows = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        rows = store.sql(QUERY.format(table=table), params=[RUN]).fetchall()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rows


def viewer_page(store: Path, repeat: int = 5) -> float:
    """The run's pairs page through ``reflectory view``: median seconds of ``repeat`` after a warm-up."""
    with viewer(store, timeout_s=300) as client:
        return median_seconds(client, f"/runs/{RUN}/pairs", {}, repeat)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=52_002)
    ap.add_argument("--replicas", type=int, default=2, help="teacher and student replicas each")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=8, help="teacher tokens per reply")
    ap.add_argument("--keep", type=Path, default=None, help="leave the store and logs in this folder")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from infra.models.tiny import build_tiny_model

    work = args.keep or Path(tempfile.mkdtemp(prefix="reflectory-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(work / "tiny")
    inp, store_path = work / "pairs.jsonl", work / "store"
    write_pairs(inp, args.pairs)
    print(
        f"{args.pairs:,} pairs, {args.replicas} replicas a role (teacher and student are one model, so "
        f"they share them), shard size "
        f"{args.shard_size}, tiny model, {args.max_tokens} tokens a reply; work in {work}",
        flush=True,
    )
    seconds, peaks = run_flow(model, inp, store_path, work, args)
    store = Store(str(store_path))
    [(raw_counts,)] = store.sql(
        "SELECT counts_json FROM runs WHERE run_id = ? AND status = 'completed'", params=[RUN]
    ).fetchall()
    counts = json.loads(raw_counts)
    compacted: dict[str, list[int]] = counts.get("compacted", {})
    if "selected" not in compacted:
        raise SystemExit(f"the run did not compact its tables; log: {work / 'flow.log'}")
    # The version each table had before the run's compaction: the one before its last.
    before_version = {t: v - 1 for t in compacted if (v := store.version(t)) is not None}
    old_s, old_rows = timed_query(store, f"selected@v{before_version['selected']}")
    new_s, new_rows = timed_query(store, "selected")
    page_s = viewer_page(store_path)

    replicas_mb = sorted((rss / 2**20 for rss in peaks.replicas.values()), reverse=True)
    print(
        f"\nflow: {seconds:.0f} s, {args.pairs / seconds:.1f} pairs/s, "
        f"{seconds / args.pairs * 1000:.1f} ms/pair; "
        f"window {counts.get('window')} shards; kept {counts.get('kept')}"
    )
    print(
        f"peak RSS: flow process {peaks.flow / 2**20:.0f} MB; replicas "
        + ", ".join(f"{mb:.0f}" for mb in replicas_mb)
        + " MB"
    )
    print("\n| table | rows | files before | files after |\n| --- | ---: | ---: | ---: |")
    for table, (before, after) in sorted(compacted.items()):
        [(rows,)] = store.sql(f"SELECT count(*) FROM {table}").fetchall()
        print(f"| {table} | {rows:,} | {before:,} | {after:,} |")
    same = "same answer" if old_rows == new_rows else "DIFFERENT ANSWERS"
    print(
        f"\nSQL (variants of the run's selected rows, a fresh connection): {old_s * 1000:.0f} ms on the "
        f"{compacted.get('selected', [0])[0]:,} files before compaction, {new_s * 1000:.0f} ms after "
        f"({old_s / new_s:.1f}x; {same})"
    )
    print(f"viewer: the run's pairs page in {page_s * 1000:.0f} ms (median of 5)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "pairs": args.pairs,
                    "replicas": args.replicas,
                    "seconds": seconds,
                    "pairs_per_s": args.pairs / seconds,
                    "peak_rss_mb": {"flow": peaks.flow / 2**20, "replicas": replicas_mb},
                    "files": compacted,
                    "sql_s": {"before": old_s, "after": new_s, "same": old_rows == new_rows},
                    "viewer_page_s": page_s,
                    "window": counts.get("window"),
                },
                indent=1,
            )
        )
    if old_rows != new_rows:
        raise SystemExit("the query's answers differ before and after compaction")


if __name__ == "__main__":
    main()
