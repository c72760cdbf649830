"""The store on a local path: idempotent shards, concurrency, time travel, schema merge, SQL, maintenance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.store import Store, StoreError

from . import store_cases


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "factory"), create=True)


def test_shard_committed_twice_appears_once(store: Store) -> None:
    store_cases.shard_committed_twice_appears_once(store)


@pytest.mark.slow
def test_four_processes_appending_shards_lose_none(store: Store) -> None:
    store_cases.concurrent_writers_lose_nothing(store)


def test_time_travel(store: Store) -> None:
    store_cases.time_travel_returns_old_rows(store)


def test_schema_merge_adds_a_column(store: Store) -> None:
    store.append("scores", [{"run_id": "r", "source_id": "a", "ifd_ppl": 0.5}])
    store.append("scores", [{"run_id": "r", "source_id": "b", "ifd_ppl": 0.7, "judge": "gpt"}])
    got = store.sql("SELECT source_id, judge FROM scores ORDER BY 1").fetchall()
    assert got == [("a", None), ("b", "gpt")]


def test_empty_tables_are_queryable_with_their_schema(store: Store) -> None:
    rel = store.sql("SELECT * FROM selected")
    assert rel.fetchall() == []
    assert "rifd_ppl" in rel.columns


def test_compact_and_vacuum(store: Store) -> None:
    for shard in range(3):
        store.commit_shard("scores", store_cases.rows(shard), run_id="r1", stage="score", shard=shard)
    metrics = store.compact("scores")
    assert metrics["numFilesRemoved"] == 3
    assert store.sql("SELECT count(*) FROM scores").fetchall() == [(9,)]
    assert store.vacuum("scores") == []  # default retention keeps everything this young
    with pytest.raises(Exception, match=r"(?i)retention"):
        store.vacuum("scores", retention_hours=0)
    assert len(store.vacuum("scores", retention_hours=0, force=True)) == 3
    assert store.sql("SELECT count(*) FROM scores").fetchall() == [(9,)]


def test_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the store"):
        Store(str(blocker / "factory"), create=True)


def test_reading_a_store_that_does_not_exist_names_it_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "store"
    with pytest.raises(StoreError, match=f"no store at {missing}"):
        Store(str(missing))
    runner = CliRunner()
    for args in (
        ["sql", "SELECT 1"],
        ["store", "history", "seeds"],
        ["export", "--to-dir", str(tmp_path / "o")],
    ):
        out = runner.invoke(app, [*args, "--store", str(missing)])
        assert out.exit_code == 2, out.output
        assert f"no store at {missing}" in " ".join(out.output.split())
    assert not (tmp_path / "no").exists()


def test_a_committed_shard_is_read_from_its_own_files_only(store: Store) -> None:
    for shard in range(6):
        store.commit_shard("scores", store_cases.rows(shard), run_id="r1", stage="score", shard=shard)
    key = "reflectory/r1/score/scores/4"
    files = store.shard_files("scores", key)
    assert len(files) == 1 and len(store.delta("scores").file_uris()) >= 6
    rows = store.read_shard("scores", "r1", "score", 4)
    assert sorted(r["source_id"] for r in rows) == ["s4-0", "s4-1", "s4-2"]
    assert "shard_key" not in rows[0]


def test_ingest_twice_adds_nothing_and_records_rejects(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "a", "output": "b"}\n{"bad json\n{"prompt": "p", "response": "r"}\n')
    uri = str(tmp_path / "f")
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", "-i", str(src), "-s", uri])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["ingest", "-i", str(src), "-s", uri])
    assert second.exit_code == 0
    store = Store(uri)  # the first ingest created it
    assert store.sql("SELECT count(*) FROM seeds").fetchall() == [(2,)]
    assert store.sql("SELECT line, reason FROM rejects").fetchall() == [(2, "invalid_json")]


def test_ingest_streams_in_chunks_with_the_same_rows_and_counts_as_in_one(tmp_path: Path) -> None:
    """A dataset is ingested a chunk at a time (a commit each), so the process holds one chunk's text:
    the rows, rejects and counts equal those of a single commit, and a second ingest adds nothing."""
    from storage.ingest import ingest_to_store

    lines = [json.dumps({"instruction": f"q{i % 7}", "output": f"a{i % 7}"}) for i in range(12)]
    lines[4] = "{not json"
    lines[9] = json.dumps({"instruction": "", "output": "x"})
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    whole, chunked = (
        Store(str(tmp_path / "whole"), create=True),
        Store(str(tmp_path / "chunked"), create=True),
    )
    one = ingest_to_store(whole, str(src), "r")
    many = ingest_to_store(chunked, str(src), "r", chunk_rows=2)
    assert one == many and (one.read, one.items, one.duplicates_in_input, one.rejects) == (12, 7, 3, 2)
    seeds = "SELECT source_id, instruction, output, source_line FROM seeds ORDER BY source_line"
    assert whole.sql(seeds).fetchall() == chunked.sql(seeds).fetchall()
    rejects = "SELECT line, reason FROM rejects ORDER BY line"
    assert whole.sql(rejects).fetchall() == chunked.sql(rejects).fetchall()
    assert len(chunked.history("seeds")) > len(whole.history("seeds"))  # several commits
    again = ingest_to_store(chunked, str(src), "r2", chunk_rows=2)
    assert (again.new_seeds, again.known_seeds, again.new_rejects) == (0, 7, 0)


def test_ingest_keeps_every_message_of_a_conversation_and_rejects_what_is_not_one(tmp_path: Path) -> None:
    """ShareGPT and messages rows with system prompts and several exchanges keep every message in
    ``seeds.messages``; a row that starts with the assistant is rejected with its reason."""
    share = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                               {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Bye"},
                               {"from": "gpt", "value": "Goodbye."}]}  # fmt: skip
    chat = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    bad = {"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Yo"}]}
    src = tmp_path / "chats.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in (share, chat, bad)) + "\n")
    uri = str(tmp_path / "f")
    out = CliRunner().invoke(app, ["ingest", "-i", str(src), "-s", uri])
    assert out.exit_code == 0, out.output
    assert re.search(r"conversations\W+1\b", out.output) and re.search(r"turns\W+6\b", out.output)
    store = Store(uri)
    rows = store.sql("SELECT instruction, output, messages FROM seeds ORDER BY len(messages)").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("2+2?", "4"), ("Bye", "Goodbye.")]  # the last exchange
    assert [m["content"] for m in rows[1][2]] == ["Be brief.", "Hi", "Hello.", "Bye", "Goodbye."]
    assert [m["role"] for m in rows[1][2]] == ["system", "user", "assistant", "user", "assistant"]
    assert store.sql("SELECT line, reason FROM rejects").fetchall() == [(3, "starts_with_assistant")]


def test_sql_cli_formats_and_errors(tmp_path: Path) -> None:
    uri = str(tmp_path / "f")
    Store(uri, create=True).append(
        "seeds", [{"run_id": "r", "source_id": "a", "instruction": "i", "output": "o"}]
    )
    runner = CliRunner()
    out = runner.invoke(app, ["sql", "SELECT source_id FROM seeds", "-s", uri, "-f", "json"])
    assert out.exit_code == 0 and '"source_id": "a"' in out.output
    target = tmp_path / "x.parquet"
    assert (
        runner.invoke(
            app, ["sql", "SELECT * FROM seeds", "-s", uri, "-f", "parquet", "-o", str(target)]
        ).exit_code
        == 0
    )
    assert target.exists()
    bad = runner.invoke(app, ["sql", "SELECT * FROM nowhere", "-s", uri])
    assert bad.exit_code == 2 and "SQL error" in bad.output


def test_shard_commit_with_a_new_column_evolves_the_schema(store: Store) -> None:
    store.commit_shard("scores", store_cases.rows(0), run_id="r1", stage="score", shard=0)
    extra = [dict(r, judge="gpt") for r in store_cases.rows(1)]
    assert store.commit_shard("scores", extra, run_id="r1", stage="score", shard=1)
    assert store.sql("SELECT shard, count(judge) FROM scores GROUP BY 1 ORDER BY 1").fetchall() == [
        (0, 0),
        (1, 3),
    ]
