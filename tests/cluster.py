"""A real multi-node Ray cluster on this machine, for the cluster tests and ``bench/cluster.py``.

Each node is its own ``ray start --block`` process group (a head, then workers joining it with
``--address``), bound to 127.0.0.1, every port its own free one, its own CPUs and a resource that
names it (``node:NAME``-style labels: ``{"reflectory-NAME": 1}``), all under one short RAY_TMPDIR so
that nothing here is the ``/tmp/ray`` cluster a run on this machine would join by itself. A node is
killed by its own pids (``kill_raylet`` is the fault: the node's raylet, and with it its replicas);
at the end every process naming the cluster's temp dir is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.ray_auth import write_token
from tests.integration.conftest import free_ports

ROOT = Path(__file__).resolve().parents[1]
# A node that has not stopped by then is killed: a test's cluster needs no graceful end, and a head
# whose workers were gone often waited the whole 20 s it was once given (in every cluster test's teardown).
STOP_GRACE_S = 3
# A node's start that fails with one of these is tried again, on fresh ports: Ray gives a raylet a
# fixed 30 s to register (a busy machine may miss it), and a port found free may be taken by another
# test's Ray before this node binds it (its GCS then cannot start its gRPC server).
RETRYABLE_START = ("timed out during startup", "Address already in use", "Failed to start the grpc server",
                   "is trying to use a port number")  # fmt: skip
START_ATTEMPTS = 3


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]  # ``ray start --block``
    log: Path
    node_manager_port: int

    def raylet_pid(self) -> int:
        """The pid of this node's raylet (Ray starts it in a session of its own, so it is found by the
        node-manager port this node was given)."""
        [pid] = [
            pid
            for pid, args in processes()
            if "raylet" in args and f"--node_manager_port={self.node_manager_port}" in args
        ]
        return pid

    def kill_raylet(self) -> int:
        """SIGKILL this node's raylet (its workers, replicas included, die with it); returns its pid."""
        pid = self.raylet_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # ray start --block stops its node's processes
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def started(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> bool:
    """Whether ``ray start`` (writing to ``log``) said its node is up before it exited or timed out."""
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


def retryable(log: Path) -> bool:
    """Whether a node's failed start is worth another try (``RETRYABLE_START``)."""
    text = log.read_text()
    return any(cause in text for cause in RETRYABLE_START)


def processes() -> list[tuple[int, str]]:
    """(pid, full command line) of every process on this machine, from /proc (ps may cut lines)."""
    rows = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                rows.append(
                    (
                        int(entry.name),
                        (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"),
                    )
                )
    return rows


@dataclass
class RayCluster:
    """A head and workers; ``address`` is what ``--ray-address`` takes."""

    work: Path
    tmpdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="rayc", dir="/tmp"))  # short paths
    nodes: list[Node] = field(default_factory=list)
    address: str = ""

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            RAY_TMPDIR=self.tmpdir,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_path),
            OMP_WAIT_POLICY="PASSIVE",
            RAY_USAGE_STATS_ENABLED="0",
        )

    @property
    def token_path(self) -> Path:
        """The cluster's token: its nodes and the runs that join it read it (token authentication on)."""
        path = Path(self.tmpdir) / "auth_token"
        if not path.exists():
            write_token(path)
        return path

    def start_head(self, cpus: int) -> RayCluster:
        self._start("head", cpus, head=True)
        return self

    def add_worker(self, name: str, cpus: int) -> Node:
        return self._start(name, cpus, head=False)

    def _start(self, name: str, cpus: int, head: bool) -> Node:
        log = self.work / f"ray-{name}.log"
        for attempt in range(1, START_ATTEMPTS + 1):
            # Fresh ports for each try, all different (each one free alone is not enough: two picks
            # of "a free port" can return the same one, which Ray refuses).
            node_manager_port, port, client, objects, agent, agent_grpc, metrics, runtime = free_ports(8)
            role = (
                [
                    "--head",
                    f"--port={port}",
                    "--include-dashboard=false",
                    f"--ray-client-server-port={client}",
                ]
                if head
                else [f"--address={self.address}"]
            )
            ports = [
                f"--node-manager-port={node_manager_port}", f"--object-manager-port={objects}",
                f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime}",
            ]  # fmt: skip
            cmd = [
                sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
                *role, *ports,
                f"--num-cpus={cpus}", "--num-gpus=0", f'--resources={{"reflectory-{name}": 1}}',
                "--node-ip-address=127.0.0.1", "--disable-usage-stats",
            ]  # fmt: skip
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                    start_new_session=True,
                    cwd=ROOT,
                )
            if started(proc, log):
                if head:
                    self.address = f"127.0.0.1:{port}"
                node = Node(name, proc, log, node_manager_port)
                self.nodes.append(node)
                return node
            Node(name, proc, log, node_manager_port).stop()
            if attempt == START_ATTEMPTS or not retryable(log):
                break
        raise RuntimeError(f"ray node {name} did not start:\n{log.read_text()[-3000:]}")

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.nodes.clear()
        # Whatever of this cluster outlived its node (a worker whose raylet was killed): found by the
        # temp dir every Ray process of it names on its command line.
        for pid, args in processes():
            if self.tmpdir in args:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
