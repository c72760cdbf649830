"""The traces flow end to end: real Prefect (ephemeral API), a real local Ray, real Delta tables.

The teacher is the tiny model taught one trace (``tests/taught_model.py``), so every path of the
flow runs for real: a valid trace whose answer matches the gold (kept), the same trace on questions
with another answer (dropped as wrong), a question without gold (kept unverified), and an unreadable
input line (a reject).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from storage.store import Store
from tests.integration.test_recycle_flow import ROOT, run_here
from tests.tables import run_row
from tests.taught_model import teach_reply

pytestmark = pytest.mark.slow

TRACE = (
    "<thinking>\n7 + 18 = 25, then 25 - 17 = 8.\n<reflection>\nCheck the subtraction: 25 - 17 = 8.\n"
    "</reflection>\n</thinking>\n<output>\n8\n</output>"
)
NO_GOLD = "Name a prime number between 7 and 13."


def questions() -> list[dict[str, str]]:
    rows = [json.loads(line) for line in (ROOT / "data" / "math_sample.jsonl").read_text().splitlines()[:3]]
    assert rows[0]["answer"].endswith("#### 8")  # the taught trace's answer is right for this one only
    return [*rows, {"question": NO_GOLD}]


@pytest.fixture(scope="module")
def taught_teacher(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.engines.tokenizer import TextTokenizer
    from tasks.prompts import render

    tok = TextTokenizer.load(str(tiny_model_path))
    system = render("trace_system")
    prompts = [
        tok.render_chat(
            [
                {"role": "system", "content": system},
                {"role": "user", "content": render("trace_user", question=q["question"])},
            ]
        )
        for q in questions()
    ]
    return teach_reply(tiny_model_path, tmp_path_factory.mktemp("models") / "taught", prompts, TRACE)


def traces_args(inp: Path, store: Path, config: Path, model: Path, run_id: str) -> list[str]:
    return [
        "run", "traces", "-i", str(inp), "-s", str(store), "--config", str(config),
        "--teacher", f"hf:{model}", "--student", f"hf:{model}", "--run-id", run_id,
        "--shard-size", "2", "--max-tokens", "400",
    ]  # fmt: skip


def test_traces_flow_fills_the_traces_table_and_a_rerun_adds_nothing(
    tmp_path: Path, taught_teacher: Path
) -> None:
    inp = tmp_path / "questions.jsonl"
    inp.write_text("\n".join(json.dumps(q) for q in questions()) + "\n{not json\n")
    config = tmp_path / "traces.json"
    out_dir = tmp_path / "export"
    export = {"to_dir": str(out_dir), "curation": {"format": "traces"}}
    config.write_text(json.dumps({"sampling": {"temperature": 0}, "export": export}))
    store = tmp_path / "factory"
    cmd = traces_args(inp, store, config, taught_teacher, "t1")

    out = run_here(cmd, tmp_path)
    assert "traces run t1" in out.stdout
    for stage in ("generate traces", "score and keep"):  # the progress bars end at every shard
        assert re.search(stage + r" .* 2/2 shards", out.stderr), out.stderr[-2000:]
    st = Store(str(store))
    rows = {
        r["question"]: r
        for r in st.sql("SELECT * FROM traces WHERE run_id = 't1'").to_arrow_table().to_pylist()
    }
    assert len(rows) == 4
    right, *wrong = (rows[q["question"]] for q in questions()[:3])
    assert right["valid"] and right["verified"] and right["n_reflections"] == 1
    assert right["output"].strip() == "8" and right["gold"] == "8"
    assert right["kept"] and right["reason"] == "kept" and right["ifd_ppl"] < 1
    assert right["student"] == f"hf:{taught_teacher}" and right["score_error"] is None
    for row in wrong:
        assert row["valid"] and row["verified"] is False
        assert not row["kept"] and row["reason"] == "wrong_answer"
        assert math.isnan(row["ifd_ppl"]) and row["score_error"] == "not scored: wrong_answer"
    unverifiable = rows[NO_GOLD]
    assert unverifiable["gold"] is None and unverifiable["verified"] is None
    assert unverifiable["reason"] in {"kept", "ifd>=1"} and not math.isnan(unverifiable["ifd_ppl"])
    assert st.sql("SELECT line, reason FROM rejects WHERE run_id = 't1'").fetchall() == [(5, "invalid_json")]
    assert st.sql("SELECT count(*) FROM seeds WHERE run_id = 't1'").fetchall() == [(4,)]
    # The teacher's traces were committed on their own before scoring (no teacher token is lost).
    assert st.sql("SELECT count(*) FROM trace_replies WHERE run_id = 't1'").fetchall() == [(4,)]
    (flow, counts, tokens, versions) = run_row(
        st.uri, "t1", "flow", "counts_json", "tokens_json", "versions_json"
    )
    assert flow == "traces" and len(json.loads(versions)["teacher"]["sha256"]) == 16
    assert json.loads(counts)["questions"] == 4 and json.loads(counts)["verified"] == 1
    assert json.loads(tokens)[0]["completion"] > 0

    # A rerun with the same run id finds every shard committed: same rows, none twice.
    before = st.sql(
        "SELECT source_id, reason, kept, isnan(ifd_ppl) FROM traces ORDER BY source_id"
    ).fetchall()
    run_here(cmd, tmp_path)
    after = st.sql("SELECT source_id, reason, kept, isnan(ifd_ppl) FROM traces ORDER BY source_id").fetchall()
    assert after == before

    # The flow's last stage exported this run's kept traces in the Reflection chat format.
    import pyarrow.parquet as pq

    exported = pq.read_table(sorted((out_dir / "data").glob("*.parquet"))).to_pylist()
    kept = st.sql("SELECT question FROM traces WHERE kept AND run_id = 't1'").fetchall()
    assert len(exported) == len(kept) >= 1
    for row in exported:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"] and row["messages"][2]["content"] == TRACE
    assert "t1" in (out_dir / "README.md").read_text()  # the card names the run
    assert json.loads(counts)["export"]["destination"] == str(out_dir)
