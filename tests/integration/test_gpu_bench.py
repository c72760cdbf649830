"""``bench/gpu.sh --cpu-smoke``: the GPU benchmark's own code on CPU with a tiny model, kept working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_runs_on_cpu(tmp_path: Path) -> None:
    environ = dict(os.environ, WORK=str(tmp_path), OUT=str(tmp_path / "out"))
    if Path(sys.executable).parent == ROOT / ".venv" / "bin":
        # The script must find the project's environment by itself: PYTHON unset, and a PATH whose
        # python3 fails (as the machine's python3 without torch did for a new user).
        environ.pop("PYTHON", None)
        _stub_python3(tmp_path / "bin")
        environ["PATH"] = f"{tmp_path / 'bin'}:{environ['PATH']}"
    else:
        environ["PYTHON"] = sys.executable
    out = subprocess.run(
        ["bash", "bench/gpu.sh", "--cpu-smoke"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "result: reflectory" in out.stdout
    report = json.loads((tmp_path / "out" / "gpu-score.json").read_text())
    assert report["pairs"] == 24 and report["max_loss_diff_vs_reference"] <= 1e-4
    assert set(report["pairs_per_s"]) == {"reference", "reflectory"}
    # Training speed through the product's training path, LoRA against full fine-tuning.
    trained = json.loads((tmp_path / "out" / "gpu-train.json").read_text())
    assert trained["lora"]["tokens_per_s"] > 0 and trained["full"]["tokens_per_s"] > 0
    assert "result: LoRA trains at" in out.stdout


def _stub_python3(bin_dir: Path) -> None:
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text("#!/bin/sh\necho 'the system python3 was used' >&2\nexit 97\n")
    stub.chmod(0o755)
