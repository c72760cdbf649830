"""The recycle flow's optional judge stage end to end, and its resume after a kill.

The tiny model plays teacher, student and judge (its verdicts are noise; the wiring is what is
checked): every pair gets one ``judgements`` row, each kept pair a rating, the summary and the report
show the verdicts. That a judged shard is read back and never judged again on a rerun is checked
through the stage's seam (``tests/unit/test_shard_stages.py``); that a killed run resumes to the
clean run's tables, by ``tests/integration/test_recycle_flow.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from storage.store import Store
from tests.integration.test_recycle_flow import run_here, write_input
from tests.tables import run_row

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PAIRS = 4
COLUMNS = "source_id, outcome, a_first_score_a, a_first_score_b, b_first_score_a, b_first_score_b, " \
    "kept_variant, rating, reply_a_first, rating_reply, judge_prompt_version"  # fmt: skip


def args(inp: Path, store: Path, model: Path, run_id: str) -> list[str]:
    return ["run", "recycle", "-i", str(inp), "-s", str(store), "--teacher", f"hf:{model}",
            "--student", f"hf:{model}", "--judge", f"hf:{model}", "--run-id", run_id, "--shard-size", "1",
            "--max-tokens", "96", "--ray-address", "local"]  # fmt: skip


def judgements(store: Path, run_id: str) -> list[tuple[Any, ...]]:
    return (
        Store(str(store))
        .sql(f"SELECT {COLUMNS} FROM judgements WHERE run_id = '{run_id}' ORDER BY source_id")
        .fetchall()
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> tuple[Path, Path, Path, str]:
    tmp = tmp_path_factory.mktemp("judge")
    inp = write_input(tmp / "in.jsonl", n=PAIRS)
    store = tmp / "factory"
    out = run_here(args(inp, store, tiny_model_path, "clean"))
    return tmp, inp, store, out.stdout


def test_every_pair_is_judged_and_every_kept_pair_rated(clean: tuple[Path, Path, Path, str]) -> None:
    _, _, store, stdout = clean
    st = Store(str(store))
    rows = st.sql("SELECT * FROM judgements WHERE run_id = 'clean'").to_arrow_table().to_pylist()
    kept = dict(st.sql("SELECT source_id, variant FROM selected WHERE run_id = 'clean' AND kept").fetchall())
    assert len(rows) == PAIRS == len({r["source_id"] for r in rows})
    assert kept, "the tiny model keeps some pairs with these inputs"
    for r in rows:
        assert r["outcome"] in {"win", "tie", "loss", "failed"}
        assert r["judge"].startswith("hf:") and r["judge_prompt_version"] == "judge_pair/v1+grammar"
        assert (r["outcome"] == "failed") == (r["failure"] is not None)
        if r["source_id"] in kept:
            assert r["kept_variant"] == kept[r["source_id"]]
            assert (r["rating"] is None) != (r["rating_failure"] is None)
            assert r["rating"] is None or 1 <= r["rating"] <= 10
        else:
            assert r["kept_variant"] is None and r["rating_reply"] is None
    assert "judge: reflected vs original" in stdout
    (counts,) = run_row(st, "clean", "counts_json")
    judged = json.loads(counts)["judge"]
    assert judged["wins"] + judged["ties"] + judged["losses"] + judged["failed"] == PAIRS
    page = (store / "reports" / "report-clean.html").read_text()
    assert "The judge: reflected against original responses" in page
