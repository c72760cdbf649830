"""Pairs far longer than the engine's context go through ``reflectory run recycle`` on vLLM (streaming
replicas, the default engine's kind; here the tiny model): the run exits 0 with no traceback, every
pair gets one ``selected`` row, the normal pairs are scored on every variant, and each long pair is
dropped with a reason that names the cause. The rows of every other pair are untouched by the long ones.

The engine's context is set to 2048 tokens (``max_model_len``) and the scoring window to 1024: vLLM
rejects a prompt past its context the same way at any length, and a longer context would spend this
test on forward passes over long windows. (It ran SmolLM2 at 2048 tokens once; the default model's
whole recycle run is ``tests/integration/test_report.py``'s.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.store import Store
from tests.cli import Result, reflectory
from tests.tables import run_row

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = 2048
ENGINE = ["max_model_len=2048", "max_length=1024"]


def long_document(seed: int) -> str:
    """A document far past the engine's 2048-token context (checked in the test)."""
    words = ["alpha", "river", "stone", "seven", "cloud", "market", "violet", "engine", "harbor"]
    body = " ".join(words[(i * (seed + 3)) % len(words)] + str(i % 97) for i in range(1000))
    return f"Summarise the following field notes in two sentences.\n\n{body}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> tuple[Result, Path, list[dict]]:
    from infra.engines.tokenizer import TextTokenizer

    tok = TextTokenizer.load(str(tiny_model_path))
    assert min(tok.count(long_document(s)) for s in (1, 2)) > 2 * CONTEXT  # far past it, not near
    tmp = tmp_path_factory.mktemp("long")
    normal = [json.loads(x) for x in (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:2]]
    rows = [
        normal[0],
        {"instruction": long_document(1), "input": "", "output": "Notes about rivers and markets."},
        normal[1],
        {
            "instruction": "Answer the question about this text.",
            "input": long_document(2),
            "output": "Seven.",
        },
    ]
    inp = tmp / "pairs.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp / "factory"
    model = f"vllm:{tiny_model_path}"
    out = reflectory("run", "recycle", "-i", str(inp), "-s", str(store), "--run-id", "long",
                     "--teacher", model, "--student", model, "--shard-size", "2", "--max-tokens", "96",
                     *(f for o in ENGINE for f in ("-T", o)), *(f for o in ENGINE for f in ("-S", o)),
                     cwd=tmp)  # fmt: skip
    return out, store, rows


def test_the_run_completes_without_a_traceback(run) -> None:
    out, _, _ = run
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stdout + out.stderr
    # One line per cause in the summary: both long pairs' teacher requests, counted by stage.
    assert "failed instruction/prompt_too_long" in out.stdout
    assert "failed response/prompt_too_long" in out.stdout


def test_every_pair_has_one_decision_and_long_ones_name_the_cause(run) -> None:
    _, store, rows = run
    st = Store(str(store))
    seeds = dict(st.sql("SELECT instruction, source_id FROM seeds").fetchall())
    selected = dict(st.sql("SELECT source_id, reason FROM selected WHERE run_id = 'long'").fetchall())
    assert st.sql("SELECT count(*) FROM selected WHERE run_id = 'long'").fetchall() == [(4,)]
    assert set(selected) == set(seeds.values())
    long_ids = {seeds[rows[1]["instruction"]], seeds[rows[3]["instruction"]]}
    for sid in long_ids:
        assert selected[sid] == "failed:prompt_too_long"
    statuses = st.sql(
        "SELECT source_id, stage, parse_status FROM reflections WHERE run_id = 'long'"
    ).fetchall()
    for sid, _stage, status in statuses:
        if sid in long_ids:
            assert status.startswith("prompt_too_long: ") and status.endswith(f"> {CONTEXT - 1}")
    runs = json.loads(run_row(st, "long", "counts_json")[0])
    assert runs["failures"] == {"instruction/prompt_too_long": 2, "response/prompt_too_long": 2}
    assert set(runs["occupancy"]) >= {"instruction", "response", "score"}


def test_the_normal_pairs_have_all_four_variants_scored(run) -> None:
    _, store, rows = run
    st = Store(str(store))
    seeds = dict(st.sql("SELECT instruction, source_id FROM seeds").fetchall())
    for row in (rows[0], rows[2]):
        sid = seeds[row["instruction"]]
        variants = st.sql(
            f"SELECT variant, ifd_ppl FROM scores WHERE run_id = 'long' AND source_id = '{sid}'"
        ).fetchall()
        assert sorted(v for v, _ in variants) == ["A", "Q", "QA", "ori"]
        assert all(ifd == ifd for _, ifd in variants)  # not NaN
