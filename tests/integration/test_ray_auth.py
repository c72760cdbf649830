"""Ray's token authentication stays on: the local Ray a run starts refuses a call without its token,
and joining a cluster with a missing or wrong token is one line and exit 2, never a hang."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.ray_auth import probe
from tests.cluster import RayCluster
from tests.prefect_home import seeded

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

LOCAL_RAY = """
import json, sys
from infra.cluster import connect, where
from infra.ray_auth import current_token
import ray
connect("local")
gcs = ray.get_runtime_context().gcs_address
print(json.dumps({"gcs": gcs, "where": where(), "token": current_token() is not None}))
sys.stdout.flush()
sys.stdin.read()  # keep Ray up until the test has probed it
"""


def test_the_local_ray_a_run_starts_refuses_a_call_without_a_token(tmp_path: Path) -> None:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    # No token yet (a home of its own), and a short temp dir: Ray's socket paths are limited to 107 bytes.
    env.update(
        PYTHONPATH=str(ROOT), HOME=str(tmp_path), RAY_TMPDIR=tempfile.mkdtemp(prefix="rauth", dir="/tmp")
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCAL_RAY], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        info = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert info["token"] and "token authentication on" in info["where"]
        token = (tmp_path / ".ray" / "auth_token").read_text().strip()  # Ray's default place, mode 600
        assert oct((tmp_path / ".ray" / "auth_token").stat().st_mode & 0o777) == "0o600"
        assert probe(info["gcs"], None) == "refused"
        assert probe(info["gcs"], "not-the-token") == "refused"
        assert probe(info["gcs"], token) == "accepted"
    finally:
        proc.communicate(input="", timeout=60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    ray = RayCluster(tmp_path_factory.mktemp("auth")).start_head(cpus=1)
    try:
        yield ray
    finally:
        ray.stop()


def _join(
    cluster: RayCluster, tmp: Path, model: Path, **auth: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in cluster.env().items() if not k.startswith("RAY_AUTH")}
    # No token unless the case gives one: the token file is one that does not exist.
    env.update(PREFECT_HOME=str(seeded(tmp / "prefect")), RAY_AUTH_TOKEN_PATH=str(tmp / "no-token"), **auth)
    (tmp / "in.jsonl").write_text('{"instruction": "Say hi.", "output": "Hi."}\n')
    cmd = [sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(tmp / "in.jsonl"),
           "-s", str(tmp / "store"), "--ray-address", cluster.address,
           "--teacher", f"hf:{model}", "--student", f"hf:{model}"]  # fmt: skip
    t0 = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp)
    return out, time.monotonic() - t0


def test_the_clusters_token_joins_it(cluster: RayCluster) -> None:
    assert probe(cluster.address, cluster.token_path.read_text().strip()) == "accepted"
    assert probe(cluster.address, None) == "refused"


@pytest.mark.parametrize(
    ("auth", "says"),
    [
        ({"RAY_AUTH_TOKEN": "a-wrong-token"}, "refused this run's token"),
        ({}, "requires a token and this run has none"),
    ],
)
def test_a_missing_or_wrong_token_is_one_line_and_exit_2(
    cluster: RayCluster, tmp_path: Path, tiny_model_path: Path, auth, says
) -> None:
    out, seconds = _join(cluster, tmp_path, tiny_model_path, **auth)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0] and cluster.address in errors[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert seconds < 60
