"""A run's tables compacted at its end, and ``reflectory store compact``: fewer files, the same rows,
and every earlier version still readable."""

from __future__ import annotations

import json
from pathlib import Path

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
    out = reflectory(*recycle_args(inp, store, tiny_model_path, "loose"))  # 4 shards, not compacted
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
    again = reflectory(*recycle_args(inp, store, tiny_model_path, "loose"))
    assert again.returncode == 0 and json.loads(run_row(st, "loose", "counts_json")[0])["resumed_shards"] == 4

    # A run with --compact compacts the tables it wrote at its end.
    out = reflectory(*recycle_args(inp, store, tiny_model_path, "tidy"), "--compact")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    compacted = json.loads(run_row(st, "tidy", "counts_json")[0])["compacted"]
    assert set(TABLES) <= set(compacted)
    assert all(after == 1 for _, after in compacted.values()), compacted
    assert {t: st.files(t) for t in TABLES} == dict.fromkeys(TABLES, 1)
