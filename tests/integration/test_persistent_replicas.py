"""Persistent replicas on a Ray head: a second run (another process) reuses the loaded models.

This is what lets a scheduled run on a long-lived Ray head skip model loading: replicas are named,
detached actors, found again by name (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import START_ATTEMPTS, retryable, started
from tests.integration.conftest import free_port
from tests.prefect_home import seeded

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import json, sys
from infra.cluster import connect
from infra.pool import EnginePool
from tasks.engine import ChatRequest, ModelRole, Sampling
connect(sys.argv[1])
persistent, options = sys.argv[3] == "1", json.loads(sys.argv[4])
config = ModelRole(spec=sys.argv[2], persistent=persistent, options=options, num_cpus=0.5)
pool = EnginePool(config)
[c] = pool.generate([ChatRequest.user("Hello")], Sampling(max_tokens=4, temperature=0))
pool.close()
print(json.dumps({"pids": pool.pids, "text": c.text}))
"""


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray head of its own (``ray start --head --block``), stopped with its process group."""
    log = tmp_path_factory.mktemp("ray") / "head.log"
    # A temp dir of its own (short: Ray's socket paths must fit 107 bytes), so the head's address
    # file is not /tmp/ray's, which runs started meanwhile by other tests would join.
    temp_dir = _ray_tmpdir()
    proc, address = _start_head(log)
    try:
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start_head(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``ray start --head`` on a free port, tried again on a fresh one where the start may succeed
    then (``tests.cluster.RETRYABLE_START``); returns the head and its address."""
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        cmd = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
            "--num-cpus=2", "--include-dashboard=false", "--node-ip-address=127.0.0.1",
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True
            )
        if started(proc, log):
            return proc, f"127.0.0.1:{port}"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert attempt < START_ATTEMPTS and retryable(log), log.read_text()[-3000:]
    raise AssertionError("unreachable")


_TMPDIR: list[str] = []


def _ray_tmpdir() -> str:
    """RAY_TMPDIR of this module's head and drivers: Ray's files go to RAY_TMPDIR/ray."""
    if not _TMPDIR:
        _TMPDIR.append(tempfile.mkdtemp(prefix="rayh", dir="/tmp"))
    return _TMPDIR[0]


def _env() -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        OMP_WAIT_POLICY="PASSIVE",
        RAY_TMPDIR=_ray_tmpdir(),
    )


def drive(address: str, spec: str, persistent: bool, options: str = "{}") -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, address, spec, "1" if persistent else "0", options],
        env=_env(), capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_second_run_reuses_persistent_replicas(ray_head: str, tiny_model_path: Path) -> None:
    spec = f"hf:{tiny_model_path}"
    first = drive(ray_head, spec, persistent=True)
    second = drive(ray_head, spec, persistent=True)
    assert second["pids"] == first["pids"]  # the same replica process: no second model load
    assert second["text"] == first["text"]
    # A run without persistence borrows the loaded replicas and leaves them running.
    borrowing = drive(ray_head, spec, persistent=False)
    assert borrowing["pids"] == first["pids"]
    assert drive(ray_head, spec, persistent=True)["pids"] == first["pids"]
    # Replicas a non-persistent run starts (another model: other options) die with its pool.
    other = '{"dtype": "float32"}'
    assert drive(ray_head, spec, False, other)["pids"] != drive(ray_head, spec, False, other)["pids"]


def test_a_run_without_an_address_joins_the_head_running_here(
    ray_head: str, tiny_model_path: Path, tmp_path: Path
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"instruction": "Say hi.", "input": "", "output": "Hi."}) + "\n")
    spec = f"hf:{tiny_model_path}"
    env = dict(_env(), PREFECT_HOME=str(seeded(tmp_path / "prefect")), HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(inp), "-s", str(tmp_path / "store"),
         "--teacher", spec, "--student", spec, "--max-tokens", "4", "--free-text"],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    # The head's own address (its node IP), at the port the head was started on.
    port = ray_head.rsplit(":", 1)[1]
    assert re.search(rf"joined the Ray head at \S+:{port}\b", out.stderr), out.stderr[-2000:]
