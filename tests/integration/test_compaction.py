"""A run's tables compacted at its end, and ``reflectory store compact``: fewer files, the same rows,
and every earlier version still readable."""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from pathlib import Path
from typing import Any

import pytest

from storage.store import Store
from tests.cli import reflectory
from tests.integration.test_recycle_flow import recycle_args, write_input
from tests.tables import run_row

pytestmark = pytest.mark.slow

TABLES = ("reflections", "scores", "selected")
QUERY = "SELECT source_id, variant, reason, round(ifd_ppl, 6) FROM selected ORDER BY source_id"


def test_a_run_compacts_what_it_wrote_and_the_command_compacts_the_rest(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    inp = write_input(tmp_path / "in.jsonl", n=4)
    store = tmp_path / "factory"
    # 4 shards, left as they were committed
    out = reflectory(*recycle_args(inp, store, tiny_model_path, "loose"), "--no-compact")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    st = Store(str(store))
    before = {t: st.files(t) for t in TABLES}
    assert all(n >= 4 for n in before.values()), before  # a file per shard
    answers = st.sql(QUERY).fetchall()
    versions = {t: st.version(t) for t in TABLES}

    out = reflectory("store", "compact", "--store", str(store))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert {t: st.files(t) for t in TABLES} == dict.fromkeys(TABLES, 1)
    assert st.sql(QUERY).fetchall() == answers  # the same rows
    for t in TABLES:  # the versions before the compaction still read the same rows
        old = st.sql(f"SELECT count(*) FROM {t}@v{versions[t]}").fetchall()
        assert old == st.sql(f"SELECT count(*) FROM {t}").fetchall()
    # The store still knows every committed shard: a rerun of the run id computes nothing.
    again = reflectory(*recycle_args(inp, store, tiny_model_path, "loose"), "--no-compact")
    assert again.returncode == 0 and json.loads(run_row(st, "loose", "counts_json")[0])["resumed_shards"] == 4

    # A run compacts the tables it wrote at its end (by default).
    out = reflectory(*recycle_args(inp, store, tiny_model_path, "tidy"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    compacted = json.loads(run_row(st, "tidy", "counts_json")[0])["compacted"]
    assert set(TABLES) <= set(compacted)
    assert all(after == 1 for _, after in compacted.values()), compacted
    assert {t: st.files(t) for t in TABLES} == dict.fromkeys(TABLES, 1)


def _commit_shards(uri: str, run_id: str, shards: int, seed: int) -> None:
    st, rnd = Store(uri, create=True), random.Random(seed)
    for shard in range(shards):
        rows = [{"run_id": run_id, "source_id": f"{shard}-{i}", "output": "y"} for i in range(3)]
        st.commit_shard("seeds", rows, run_id=run_id, stage="ingest", shard=shard)
        time.sleep(rnd.uniform(0, 0.03))


def _compact_until(uri: str, stop: Any) -> None:
    st = Store(uri, create=True)
    while not stop.is_set():
        if st.exists("seeds"):
            try:
                st.compact("seeds")
            except Exception as exc:  # a conflict with a shard commit: that compaction is dropped
                assert "concurrent" in str(exc), exc
        time.sleep(0.01)


def test_compactions_racing_writers_of_the_same_and_other_shards_leave_each_row_once(tmp_path: Path) -> None:
    """Two processes commit the same shards (a run and its earlier attempt) while a third commits
    another run's and a fourth compacts without pause: every row is there once."""
    uri, shards = str(tmp_path / "store"), 30
    spawn = multiprocessing.get_context("spawn")  # deltalake cannot be forked after use
    stop = spawn.Event()
    compactor = spawn.Process(target=_compact_until, args=(uri, stop))
    writers = [
        spawn.Process(target=_commit_shards, args=(uri, run_id, shards, seed))
        for run_id, seed in (("twin", 1), ("twin", 2), ("other", 3))
    ]
    compactor.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=300)
    stop.set()
    compactor.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0, 0] and compactor.exitcode == 0
    st = Store(uri)
    counts = st.sql("SELECT run_id, count(*), count(DISTINCT source_id) FROM seeds GROUP BY 1 ORDER BY 1")
    assert counts.fetchall() == [("other", 3 * shards, 3 * shards), ("twin", 3 * shards, 3 * shards)]
    assert st.version("seeds") is not None and len(st.history("seeds")) > 2 * shards  # they did interleave
