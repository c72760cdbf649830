"""Where models come from: a Hub id downloads from a (local, Hub-compatible) server into the cache,
is found there offline afterwards, and a model that is neither cached nor reachable is one line.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` when imported, so each step
runs in a subprocess with its own environment; the Hub server runs in this process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_server import HubServer
from tests.integration.conftest import free_port
from tests.integration.test_hub_export import ROOT, TOKEN, env

pytestmark = pytest.mark.slow

RESOLVE = """
import json, sys
from infra.models import resolve_model
from tasks.engine import EngineError
try:
    path = resolve_model(sys.argv[1], offline={"yes": True, "no": False, "env": None}[sys.argv[2]])
    print(json.dumps({"path": path}))
except EngineError as exc:
    print(json.dumps({"error": str(exc)}))
"""
UPLOAD = """
import sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo(sys.argv[1])
api.upload_folder(folder_path=sys.argv[2], repo_id=sys.argv[1])
"""


def resolve(name: str, offline: str, environ: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", RESOLVE, name, offline], env=environ, capture_output=True, text=True,
        timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_hub_model_downloads_once_then_resolves_offline(tmp_path: Path, tiny_model_path: Path) -> None:
    repo = tmp_path / "repo"  # the model with PyTorch weights beside its safetensors, as many repos have
    shutil.copytree(tiny_model_path, repo)
    (repo / "pytorch_model.bin").write_bytes(b"not needed")
    with HubServer(tmp_path / "hub", TOKEN) as hub:
        environ = env(tmp_path, hub)
        up = subprocess.run(
            [sys.executable, "-c", UPLOAD, "tester/tiny-llama", str(repo)], env=environ,
            capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr[-3000:]
        got = resolve("tester/tiny-llama", "no", environ)
        folder = Path(got["path"])
        assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
        assert not (folder / "pytorch_model.bin").exists()  # the safetensors serve: the .bin is skipped
        assert str(tmp_path / "hf_home") in got["path"]  # the Hub cache, not a folder of ours
    # The server is gone: the cached copy is found offline (by the flag and by HF_HUB_OFFLINE).
    assert resolve("tester/tiny-llama", "yes", env(tmp_path, None)) == got
    assert resolve("tester/tiny-llama", "env", env(tmp_path, None, offline=True)) == got


def test_a_model_neither_cached_nor_reachable_is_one_line_naming_it(tmp_path: Path) -> None:
    offline = resolve("someorg/never-downloaded", "env", env(tmp_path, None, offline=True))
    assert offline["error"].startswith(
        "model 'someorg/never-downloaded' is not in the local Hugging Face cache"
    )
    assert "offline" in offline["error"] and "\n" not in offline["error"]
    unreachable = dict(
        env(tmp_path, None), HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", HF_HUB_ETAG_TIMEOUT="2"
    )
    error = resolve("someorg/never-downloaded", "env", unreachable)["error"]
    assert "cannot download model 'someorg/never-downloaded'" in error and "\n" not in error


def test_the_run_command_says_so_before_starting(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(ROOT / "data" / "demo_sample.jsonl"),
        "-s", str(tmp_path / "f"), "--teacher", "vllm:someorg/never-downloaded", "--offline",
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env(tmp_path, None), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert "model 'someorg/never-downloaded' is not in the local Hugging Face cache" in " ".join(
        out.stderr.split()
    )
    assert "Traceback" not in out.stderr
