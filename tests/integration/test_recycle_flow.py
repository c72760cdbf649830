"""The recycle flow end to end: real Prefect (ephemeral API), a real local Ray, real Delta tables.

A run killed with SIGKILL part-way and rerun with the same run id must end with the same selected pairs
as a clean run, with no duplicate rows; a run interrupted with Ctrl-C ends as cancelled in seconds.
The kills happen at known points (``tests/crash_points.py``), never after a sleep or a poll. Runs that
need no process of their own run in this one (``tests.cli``). Engine replicas killed mid-run are
``tests/integration/test_pool.py`` (a replica) and ``tests/integration/test_cluster.py`` (a node).
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
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.browse import Browser
from storage.hub_export import read_from_store
from storage.store import Store
from tasks.curate import to_format
from tests.cli import Result, reflectory
from tests.cluster import processes
from tests.prefect_home import seeded
from tests.tables import run_row

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def write_input(path: Path, n: int = 6) -> Path:
    rows = [json.loads(line) for line in (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:n]]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def recycle_args(inp: Path, store: Path, model: Path, run_id: str) -> list[str]:
    return [
        "run", "recycle", "-i", str(inp), "-s", str(store),
        "--teacher", f"hf:{model}", "--student", f"hf:{model}", "--run-id", run_id,
        "--shard-size", "1", "--max-tokens", "96",
    ]  # fmt: skip


def crashing_cmd(point: list[str], inp: Path, store: Path, model: Path, run_id: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.crash_points",
        *point,
        "--",
        *recycle_args(inp, store, model, run_id),
    ]


def env(tmp: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        PREFECT_HOME=str(seeded(tmp / "prefect")),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )


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
    stdout: str = ""

    def args(self, run_id: str) -> tuple[Path, Path, Path, str]:
        return self.inp, self.store, self.model, run_id

    def counts(self, run_id: str) -> dict[str, list[tuple]]:
        st = Store(str(self.store))
        return {
            t: st.sql(f"SELECT count(*) FROM {t} WHERE run_id = '{run_id}'").fetchall()
            for t in ("reflections", "scores", "selected")
        }


def run_here(args: list[str], cwd: Path | None = None) -> Result:
    """The command in this process (``tests.cli``), which must succeed."""
    out = reflectory(*args, cwd=cwd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> CleanRun:
    """One uninterrupted run: the tables every interrupted run must end up equal to."""
    tmp = tmp_path_factory.mktemp("recycle")
    inp = write_input(tmp / "in.jsonl", n=4)
    with inp.open("a") as f:  # and two conversations that end alike after different histories
        for first in ("Name a fruit.", "Name a red fruit."):
            turns = [("system", "Answer briefly."), ("user", first), ("assistant", "Apple."),
                     ("user", "Another?"), ("assistant", "Pear.")]  # fmt: skip
            f.write(json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]}) + "\n")
    store = tmp / "factory"
    out = run_here(recycle_args(inp, store, tiny_model_path, "clean"))
    assert "recycle run" in out.stdout
    return CleanRun(tmp, inp, store, tiny_model_path, selected(store, "clean"), out.stdout)


def test_recycle_fills_tables(clean: CleanRun) -> None:
    st = Store(str(clean.store))
    assert st.sql("SELECT count(*) FROM seeds").fetchall() == [(6,)]
    [(messages,), _] = st.sql(
        "SELECT messages FROM seeds WHERE instruction = 'Another?' ORDER BY source_id"
    ).fetchall()
    assert [m["content"] for m in messages][-3:] == ["Apple.", "Another?", "Pear."] and len(messages) == 5
    assert st.sql("SELECT count(*) FROM reflections WHERE run_id = 'clean'").fetchall()[0][0] >= 12
    assert st.sql("SELECT count(DISTINCT source_id) FROM scores WHERE run_id = 'clean'").fetchall() == [(6,)]
    assert st.sql("SELECT DISTINCT scoring_version FROM scores").fetchall() == [("scoring/v2",)]
    assert len(clean.selected) == 6  # every pair decided, the conversations too
    status, counts, versions, tokens = run_row(st, "clean", "status", "counts_json", "versions_json",
                                               "tokens_json")  # fmt: skip
    assert status == "completed" and json.loads(counts)["pairs"] == 6 and json.loads(counts)["shards"] == 6
    assert json.loads(counts)["conversations"] == 2 and "conversations" in clean.stdout
    # The same last exchange after two histories: the answer alone scores the same, the answer after
    # its history does not; the teacher saw the history (its prompt version says so).
    ori = st.sql(
        "SELECT s.loss_direct, s.loss_cond FROM scores s JOIN seeds USING (source_id) "
        "WHERE s.run_id = 'clean' AND s.variant = 'ori' AND seeds.instruction = 'Another?'"
    ).fetchall()
    assert len(ori) == 2 and ori[0][0] == pytest.approx(ori[1][0]) and ori[0][1] != pytest.approx(ori[1][1])
    versions_seen = st.sql(
        "SELECT DISTINCT r.prompt_version FROM reflections r JOIN seeds USING (source_id) "
        "WHERE r.run_id = 'clean' AND seeds.instruction = 'Another?'"
    ).fetchall()
    assert versions_seen and all("+history" in v for (v,) in versions_seen)
    # An export of the run's decisions writes each conversation whole: its history, then the row's
    # exchange (the kept variant's, or the original's for a dropped pair).
    rows, _ = read_from_store(st, "selected", run_id="clean")
    chats = [r["messages"] for r in to_format(rows, "messages").to_pylist()]
    assert sorted(len(c) for c in chats) == [2, 2, 2, 2, 5, 5]
    assert {c[1]["content"] for c in chats if len(c) == 5} == {"Name a fruit.", "Name a red fruit."}
    # What the flow held: the window (every shard here: 6 < 8), the most in flight, its peak memory;
    # and its tables compacted at its end.
    held = json.loads(counts)
    assert held["window"] == 6 and 1 <= held["in_flight_max"] <= 6 and held["peak_rss_mb"] > 100
    assert held["compacted"]["selected"] == [6, 1]
    assert "shards in flight" in clean.stdout and "compacted" in clean.stdout
    assert json.loads(versions)["scoring"] == "scoring/v2"
    assert {t["stage"] for t in json.loads(tokens)} == {"instruction", "response"}
    # No prices given: usage is recorded and shown, a cost never.
    (cost_json,) = run_row(st, "clean", "cost_json")
    cost = json.loads(cost_json)
    assert cost["total"] is None and all(s["cost"] is None for s in cost["stages"])
    assert cost["prompt_tokens"] > 0 and cost["device_hours"] > 0
    assert "device-hours" in clean.stdout and "$" not in clean.stdout


def test_a_killed_flow_process_resumes_to_the_same_result(clean: CleanRun) -> None:
    # The process kills itself (and the Ray it started) right after the 2nd shard of `selected`.
    crashed = run_until_killed(
        crashing_cmd(["kill-after-commits", "selected", "2"], *clean.args("crashy")), clean
    )
    assert "crash point: 2 shards of selected committed" in crashed
    assert len(selected(clean.store, "crashy")) == 2
    # It died without a word: its last row says running, and readers call it crashed (its process is
    # gone from this host), not running forever.
    assert run_row(clean.store, "crashy", "status") == ("running",)
    assert Browser(Store(str(clean.store))).run("crashy")["status"] == "crashed"

    run_here(recycle_args(*clean.args("crashy")))
    assert run_counts(clean.store, "crashy")["resumed_shards"] == 2  # read back, not recomputed
    resumed = selected(clean.store, "crashy")
    assert [r[0] for r in resumed] == [r[0] for r in clean.selected]  # same pairs, none twice
    assert resumed == clean.selected  # same decisions: the teacher and student are deterministic here
    # Every shard's rows exactly once: the resumed run has as many rows as the clean one.
    assert clean.counts("crashy") == clean.counts("clean")


def test_ctrl_c_cancels_the_run_in_seconds_and_keeps_what_it_committed(clean: CleanRun) -> None:
    """SIGINT to the process group (what Ctrl-C sends) after the first shard of ``selected``."""
    cmd = crashing_cmd(["signal-after-commits", "INT", "selected", "1"], *clean.args("interrupted"))
    out = subprocess.run(cmd, env=env(clean.tmp), capture_output=True, text=True, timeout=600, cwd=ROOT,
                         start_new_session=True)  # fmt: skip
    ended = time.time()
    assert out.returncode == 130, out.stdout[-3000:] + out.stderr[-3000:]
    sent = float(re.search(r"sending SIGINT at (\d+\.\d+)", out.stderr).group(1))  # type: ignore[union-attr]
    assert ended - sent < 60, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    assert _servers_of(clean.tmp / "prefect") == []  # Prefect's temporary API did not outlive the run
    assert "Resume it with: reflectory run recycle" in out.stderr and "--run-id interrupted" in out.stderr
    assert run_row(clean.store, "interrupted", "status", "cause") == ("cancelled", "interrupted (Ctrl-C)")
    assert Browser(Store(str(clean.store))).run("interrupted")["status"] == "cancelled"
    kept = selected(clean.store, "interrupted")
    assert len(kept) >= 1 and len({r[0] for r in kept}) == len(kept)
    assert set(kept) <= set(clean.selected)


def test_a_deleted_store_means_every_shard_is_computed_again(clean: CleanRun) -> None:
    """The store is the only record: no Prefect cache stands in for rows that are gone. The clean
    run's store is set aside (put back at the end) and the clean run repeated, same run id, same
    Prefect home."""
    results = Path(os.environ["PREFECT_HOME"]) / "storage"
    before = set(results.iterdir())
    aside = clean.tmp / "store-set-aside"
    clean.store.rename(aside)
    try:
        run_here(recycle_args(*clean.args("clean")))
        assert run_counts(clean.store, "clean")["resumed_shards"] == 0
        assert selected(clean.store, "clean") == clean.selected and len(clean.selected) == 6
        # Prefect kept the flow run's summary (for run_deployment), and no task's rows.
        assert len(set(results.iterdir()) - before) == 1, sorted(set(results.iterdir()) - before)
    finally:
        shutil.rmtree(clean.store, ignore_errors=True)
        aside.rename(clean.store)


def run_counts(store: Path, run_id: str) -> dict:
    (counts,) = run_row(store, run_id, "counts_json")
    return json.loads(counts)


def run_until_killed(cmd: list[str], c: CleanRun) -> str:
    out = subprocess.run(cmd, env=env(c.tmp), capture_output=True, text=True, timeout=600, cwd=ROOT,
                         start_new_session=True)  # fmt: skip
    assert out.returncode == -signal.SIGKILL, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stderr


def test_a_config_file_run_without_flags_uses_the_files_values(clean: CleanRun, tmp_path: Path) -> None:
    """Store, models, shard size and token budget from the file; 8 tokens leave no room for the
    constrained forms, so those replies are free text (truncated), and the run still completes."""
    config = tmp_path / "run.yaml"
    config.write_text(
        f"input: {clean.inp}\nstore: ./cfgstore\nteacher: {{spec: 'hf:{clean.model}'}}\n"
        f"student: 'hf:{clean.model}'\nshard_size: 4\nsampling: {{max_tokens: 8}}\nrun_id: cfg\n"
    )
    out = run_here(["run", "recycle", "--config", str(config)], cwd=tmp_path)
    assert "max_tokens 8 is too small for the reflect_instruction form" in out.stderr.replace("\n", " ")
    store = Store(str(tmp_path / "cfgstore"))
    assert run_counts(tmp_path / "cfgstore", "cfg")["shards"] == 2  # 6 pairs in shards of 4
    [(teachers, most, statuses)] = store.sql(
        "SELECT list(DISTINCT teacher), max(completion_tokens), list(DISTINCT parse_status) "
        "FROM reflections WHERE run_id = 'cfg'"
    ).fetchall()
    assert teachers == [f"hf:{clean.model}"] and most <= 8 and "truncated" in statuses
    (config_json,) = run_row(store, "cfg", "config_json")
    assert json.loads(config_json)["sampling"]["max_tokens"] == 8
    assert not (ROOT / "cfgstore").exists() and not (tmp_path / "factory").exists()


def _servers_of(home: Path) -> list[int]:
    """Processes of Prefect's temporary API that serve the Prefect home ``home`` (by their environment)."""
    out = []
    for pid, args in processes():
        if "uvicorn" not in args:
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            if f"PREFECT_HOME={home}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                out.append(pid)
    return out
