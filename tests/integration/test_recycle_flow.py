"""The recycle flow end to end: real Prefect (ephemeral API), a real local Ray, real Delta tables.

A run killed with SIGKILL part-way and rerun with the same run id, and a run whose engine replica is
killed, must end with the same selected pairs as a clean run, with no duplicate rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CleanRun:
    tmp: Path
    inp: Path
    store: Path
    model: Path
    selected: list[tuple]

    def counts(self, run_id: str) -> dict[str, list[tuple]]:
        st = Store(str(self.store))
        return {
            t: st.sql(f"SELECT count(*) FROM {t} WHERE run_id = '{run_id}'").fetchall()
            for t in ("reflections", "scores", "selected")
        }


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> CleanRun:
    """One uninterrupted run: the tables every interrupted run must end up equal to."""
    tmp = tmp_path_factory.mktemp("recycle")
    inp = write_input(tmp / "in.jsonl")
    store = tmp / "factory"
    out = run(recycle_cmd(inp, store, tiny_model_path, "clean"), tmp)
    assert "recycle run" in out.stdout
    return CleanRun(tmp, inp, store, tiny_model_path, selected(store, "clean"))


def start(c: CleanRun, run_id: str) -> subprocess.Popen[bytes]:
    log = (c.tmp / f"{run_id}.log").open("wb")
    return subprocess.Popen(
        recycle_cmd(c.inp, c.store, c.model, run_id), env=env(c.tmp), cwd=ROOT,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def wait_for_selected(c: CleanRun, proc: subprocess.Popen[bytes], run_id: str, n: int) -> None:
    deadline = time.monotonic() + 400
    while len(selected(c.store, run_id)) < n:
        assert proc.poll() is None, (c.tmp / f"{run_id}.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_recycle_fills_tables(clean: CleanRun) -> None:
    st = Store(str(clean.store))
    assert st.sql("SELECT count(*) FROM seeds").fetchall() == [(6,)]
    assert st.sql("SELECT count(*) FROM reflections WHERE run_id = 'clean'").fetchall()[0][0] >= 12
    assert st.sql("SELECT count(DISTINCT source_id) FROM scores WHERE run_id = 'clean'").fetchall() == [(6,)]
    assert len(clean.selected) == 6
    runs = st.sql(
        "SELECT status, counts_json, stage_seconds_json FROM runs WHERE run_id = 'clean'"
    ).fetchall()
    assert runs[0][0] == "completed" and json.loads(runs[0][1])["pairs"] == 6


def test_a_killed_flow_process_resumes_to_the_same_result(clean: CleanRun) -> None:
    # Kill the flow process (and everything it started) once some shards have committed.
    proc = start(clean, "crashy")
    wait_for_selected(clean, proc, "crashy", 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(selected(clean.store, "crashy"))
    assert 2 <= partial < 6

    run(recycle_cmd(clean.inp, clean.store, clean.model, "crashy"), clean.tmp)
    resumed = selected(clean.store, "crashy")
    assert [r[0] for r in resumed] == [r[0] for r in clean.selected]  # same pairs, none twice
    assert resumed == clean.selected  # same decisions: the teacher and student are deterministic here
    # Every shard's rows exactly once: the resumed run has as many rows as the clean one.
    assert clean.counts("crashy") == clean.counts("clean")


def test_a_killed_engine_replica_costs_no_rows(clean: CleanRun) -> None:
    import psutil

    proc = start(clean, "actor-killed")
    wait_for_selected(clean, proc, "actor-killed", 1)
    replicas = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "_EngineActor" in " ".join(p.cmdline())
    ]
    assert replicas, "no engine replica process found"
    for p in replicas:
        p.kill()
    assert proc.wait(400) == 0, (clean.tmp / "actor-killed.log").read_text()[-3000:]
    assert selected(clean.store, "actor-killed") == clean.selected
    assert clean.counts("actor-killed") == clean.counts("clean")
