"""The recycle flow end to end: real Prefect (ephemeral API), a real local Ray, real Delta tables.

A run killed with SIGKILL part-way and rerun with the same run id must end with the same selected
pairs as a clean run, with no duplicate rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def write_input(path: Path, n: int = 6) -> Path:
    rows = [json.loads(line) for line in (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:n]]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def recycle_cmd(inp: Path, store: Path, model: Path, run_id: str) -> list[str]:
    return [
        sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(inp), "-s", str(store),
        "--teacher", f"hf:{model}", "--student", f"hf:{model}", "--run-id", run_id,
        "--shard-size", "1", "--max-tokens", "24",
    ]  # fmt: skip


def env(tmp: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        PREFECT_HOME=str(tmp / "prefect"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        RAY_AUTH_MODE="disabled",
    )


def run(cmd: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, env=env(tmp), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def selected(store: Path, run_id: str) -> list[tuple]:
    return (
        Store(str(store))
        .sql(
            "SELECT source_id, kept, variant, reason FROM selected "
            f"WHERE run_id = '{run_id}' ORDER BY source_id"
        )
        .fetchall()
    )


def test_recycle_fills_tables_and_a_killed_run_resumes_to_the_same_result(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    inp = write_input(tmp_path / "in.jsonl")
    store = tmp_path / "factory"

    clean = run(recycle_cmd(inp, store, tiny_model_path, "clean"), tmp_path)
    assert "recycle run" in clean.stdout
    st = Store(str(store))
    assert st.sql("SELECT count(*) FROM seeds").fetchall() == [(6,)]
    assert st.sql("SELECT count(*) FROM reflections WHERE run_id = 'clean'").fetchall()[0][0] >= 12
    assert st.sql("SELECT count(DISTINCT source_id) FROM scores WHERE run_id = 'clean'").fetchall() == [(6,)]
    baseline = selected(store, "clean")
    assert len(baseline) == 6
    runs = st.sql(
        "SELECT status, counts_json, stage_seconds_json FROM runs WHERE run_id = 'clean'"
    ).fetchall()
    assert runs[0][0] == "completed" and json.loads(runs[0][1])["pairs"] == 6

    # Kill the flow process (and everything it started) once some shards have committed.
    log = (tmp_path / "crashy.log").open("wb")
    proc = subprocess.Popen(
        recycle_cmd(inp, store, tiny_model_path, "crashy"), env=env(tmp_path), cwd=ROOT,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 400
    while len(selected(store, "crashy")) < 2:
        assert proc.poll() is None, (tmp_path / "crashy.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(selected(store, "crashy"))
    assert 2 <= partial < 6

    run(recycle_cmd(inp, store, tiny_model_path, "crashy"), tmp_path)
    resumed = selected(store, "crashy")
    assert [r[0] for r in resumed] == [r[0] for r in baseline]  # same pairs, none twice
    assert resumed == baseline  # same decisions: the teacher and student are deterministic here
    for table in ("reflections", "scores", "selected"):
        # Every shard's rows exactly once: the resumed run has as many rows as the clean one.
        per_clean = st.sql(f"SELECT count(*) FROM {table} WHERE run_id = 'clean'").fetchall()
        per_crashy = st.sql(f"SELECT count(*) FROM {table} WHERE run_id = 'crashy'").fetchall()
        assert per_clean == per_crashy, table
