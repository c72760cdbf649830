"""``reflectory compare`` against an OpenAI-compatible judge whose replies the test writes.

Two answer files over real test-set questions; the judge server (real HTTP) answers by a fixed table
of cases: clear wins and losses, a judge that prefers whichever answer comes first, a tie in one
order, replies with no score pair, and a first line the reference cannot read (``8, 7``). The test
aggregates the server's recorded replies with the reference's own parser and rule and expects the
same wins, ties and losses, with the unreadable items counted as failed, per test set and in total.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.store import Store
from storage.test_sets import read_test_sets
from tests.cli import Result, reflectory
from tests.judge_reference import reference_outcome, reference_parse
from tests.judge_server import JudgeServer, judge_server
from tests.prefect_home import seeded
from tests.tables import run_row

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SETS = ("vicuna", "koala", "wizardlm")

# By item number mod 6: the reply when A is shown first, and when B is shown first.
CASES = {
    0: ("9 4\nA is better.", "4 9\nA is better."),  # a win
    1: ("8 6\nThe first.", "8 6\nThe first."),  # prefers whatever comes first: a tie
    2: ("7 7\nEqual.", "5 8\nThe second."),  # tied, then A higher: a win
    3: ("3 9\nB is better.", "9 3\nB is better."),  # a loss
    4: ("6 2\nA.", "Both answers are fine."),  # no score pair: failed
    5: ("8, 7\nA.", "7,8\nA."),  # '8, 7' is no pair to the reference: failed
}


def reply(first: str, second: str, question: str) -> str:
    side, number = first[0], int(first[1:].split(":")[0])
    return CASES[number % 6][0 if side == "A" else 1]


def env(tmp: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        PREFECT_HOME=str(seeded(tmp / "prefect")),
        HF_HUB_OFFLINE="1",
        OMP_WAIT_POLICY="PASSIVE",
        RAY_TMPDIR=tempfile.mkdtemp(prefix="cmp", dir="/tmp"),
    )


def compare(tmp: Path, *args: str) -> Result:
    """``reflectory compare`` in this process (``tests.cli``)."""
    return reflectory("compare", "--store", str(tmp / "store"), *args, cwd=tmp)


def write_answers(tmp: Path) -> tuple[Path, Path, list[str]]:
    questions = read_test_sets(list(SETS), ROOT / "data" / "benchmarks", limit=4)
    a, b = tmp / "a.jsonl", tmp / "b.jsonl"
    a.write_text("".join(json.dumps({"instruction": q.question, "output": f"A{i}: an answer"}) + "\n"
                         for i, q in enumerate(questions)))  # fmt: skip
    # B's file uses a test set's own prompt key where it has one (vicuna: text), as exported sets do.
    b.write_text("".join(json.dumps({"text": q.question, "output": f"B{i}: another answer"}) + "\n"
                         for i, q in enumerate(questions)))  # fmt: skip
    return a, b, [q.test_set for q in questions]


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    tmp = tmp_path_factory.mktemp("compare")
    a, b, sets = write_answers(tmp)
    with judge_server(reply) as server:
        spec = f"openai:judge@{server.url}"
        args = ["--answers-a", str(a), "--answers-b", str(b), "--judge", spec, "--json", "--run-id", "cmp",
                "--shard-size", "5", "--test-sets-dir", str(ROOT / "data" / "benchmarks"),
                "--judge-price", "input=2", "--judge-price", "output=10"]  # fmt: skip
        first = compare(tmp, *args)
        asked = len(server.requests)
        again = compare(tmp, *args)
        yield tmp, server, sets, first, again, asked


def expected(server: JudgeServer, sets: list[str]) -> dict[str, dict[str, int]]:
    """The reference aggregation of the replies the server gave, per test set and in total."""
    replies: dict[int, dict[str, str]] = defaultdict(dict)
    for _, first, second in server.prompts():
        number = int(first[1:].split(":")[0])
        replies[number][first[0]] = reply(first, second, "")
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"wins": 0, "ties": 0, "losses": 0, "failed": 0})
    for number, by_first in replies.items():
        s1, s2 = reference_parse(by_first["A"]), reference_parse(by_first["B"])
        key = (
            "failed"
            if [-1, -1] in (s1, s2)
            else {"win": "wins", "tie": "ties", "loss": "losses"}[reference_outcome(s1, s2)]
        )
        for name in (sets[number], "total"):
            out[name][key] += 1
    return out


def test_every_item_is_asked_in_both_orders(judged: tuple[Any, ...]) -> None:
    _, server, sets, first, _, asked = judged
    assert first.returncode == 0, first.stderr[-3000:]
    prompts = server.prompts()[:asked]
    assert asked == 2 * len(sets)
    orders = defaultdict(set)
    for _, shown_first, shown_second in prompts:
        orders[shown_first[1:].split(":")[0]].add((shown_first[0], shown_second[0]))
    assert all(o == {("A", "B"), ("B", "A")} for o in orders.values()) and len(orders) == len(sets)
    assert {r["temperature"] for r in server.requests} == {0.0}
    assert {r["max_tokens"] for r in server.requests} == {256}


def test_counts_equal_the_reference_aggregation_of_the_same_replies(judged: tuple[Any, ...]) -> None:
    _, server, sets, first, _, _ = judged
    got = json.loads(first.stdout)
    want = expected(server, sets)
    for name in (*SETS, "total"):
        numbers = got["total"] if name == "total" else got["test_sets"][name]
        assert {k: numbers[k] for k in ("wins", "ties", "losses", "failed")} == want[name], name
    total = got["total"]
    judged_n = total["wins"] + total["ties"] + total["losses"]
    assert total["winning_score"] == pytest.approx((total["wins"] - total["losses"]) / judged_n + 1)
    assert total["failed"] == 4  # cases 4 and 5, twice each over 12 items
    assert Path(got["plot"]).stat().st_size > 5000


def test_verdicts_are_stored_with_their_lineage(judged: tuple[Any, ...]) -> None:
    tmp, server, sets, *_ = judged
    rows = Store(str(tmp / "store")).sql("SELECT * FROM comparisons WHERE run_id = 'cmp'").to_arrow_table()
    rows = rows.to_pylist()
    assert len(rows) == len(sets) == len({r["source_id"] for r in rows})
    assert {r["judge"] for r in rows} == {f"openai:judge@{server.url}"}
    # The server has no grammars (not vLLM): the form was not sent, and the version says so.
    assert {r["judge_prompt_version"] for r in rows} == {"judge_pair/v1"}
    assert {r["source_a"] for r in rows} == {str(tmp / "a.jsonl")}
    assert sorted(r["test_set"] for r in rows) == sorted(sets)
    failed = [r for r in rows if r["outcome"] == "failed"]
    assert all(r["failure"] and "no_score_pair" in r["failure"] for r in failed)
    assert all(r["reply_a_first"] and r["reply_b_first"] for r in rows)


def test_the_runs_row_has_the_judges_cost_shards_and_fingerprint(judged: tuple[Any, ...]) -> None:
    """The comparison lives the run context's life: started, then completed, with its judge priced."""
    tmp, server, sets, *_ = judged
    store = Store(str(tmp / "store"))
    statuses = store.sql(
        "SELECT status FROM runs WHERE run_id = 'cmp' ORDER BY started_at, ended_at NULLS FIRST"
    )
    assert [s for (s,) in statuses.fetchall()] == ["running", "completed", "running", "completed"]
    row = run_row(store, "cmp", "cost_json", "shards_json", "versions_json")
    cost, shards, versions = (json.loads(text) for text in row)
    # The server bills 100 prompt and 20 completion tokens a reply; two replies an item.
    replies = 2 * len(sets)
    assert cost["prompt_tokens"] == 100 * replies and cost["completion_tokens"] == 20 * replies
    assert cost["total"] == pytest.approx(replies * (100 * 2 + 20 * 10) / 1e6) and cost["priced"] is True
    assert sorted(s["shard"] for s in shards) == [0, 1, 2]  # 12 items in shards of 5
    assert versions["judge"]["spec"] == f"openai:judge@{server.url}"
    assert versions["judge_prompt"] == "judge_pair/v1"


def test_a_rerun_with_the_same_id_resumes_without_asking_again(judged: tuple[Any, ...]) -> None:
    _, server, _, first, again, asked = judged
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(server.requests) == asked
    assert json.loads(again.stdout)["total"] == json.loads(first.stdout)["total"]


def test_answers_to_different_questions_are_an_error_naming_the_rows(tmp_path: Path) -> None:
    a, b, _ = write_answers(tmp_path)
    lines = b.read_text().splitlines()
    lines[2] = json.dumps({"instruction": "Something else entirely?", "output": "B2"})
    b.write_text("\n".join(lines) + "\n")
    out = compare(
        tmp_path, "--answers-a", str(a), "--answers-b", str(b), "--judge", "openai:j@http://127.0.0.1:9"
    )
    assert out.returncode == 2
    assert f"{a}:3 and {b}:3 answer different questions" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.vllm
def test_two_models_answer_a_slice_of_each_test_set_and_the_embedded_judge_judges(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    """The papers' evaluation end to end on local engines: answers generated by two engines (the
    bundled SmolLM2 on vLLM, the suite's one run of the default model on its default engine, and the
    tiny model on transformers) for the first question of each of the five test sets, then judged in
    both orders by the tiny model (B's replica: two models fit 2 CPUs): its verdicts are noise, as
    SmolLM2's are at 135M, and what is checked is the machinery, not the verdict."""
    a, b = "vllm:smollm2", f"hf:{tiny_model_path}"
    judge = b
    out = compare(tmp_path, "--model-a", a, "--model-b", b, "--judge", judge,
                  "--limit", "1", "--max-tokens", "24", "--judge-max-tokens", "40", "--json",
                  "--test-sets-dir", str(ROOT / "data" / "benchmarks"), "--run-id", "models")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert list(got["test_sets"]) == ["vicuna", "koala", "wizardlm", "sinstruct", "lima"]
    assert got["total"]["n"] == 5 and all(t["n"] == 1 for t in got["test_sets"].values())
    store = Store(str(tmp_path / "store"))
    answers = store.sql("SELECT side, model, status FROM compare_answers WHERE run_id = 'models'").fetchall()
    assert sorted((s, m) for s, m, _ in answers) == [("a", a)] * 5 + [("b", b)] * 5
    verdicts = store.sql(
        "SELECT outcome, source_a, source_b FROM comparisons WHERE run_id = 'models'"
    ).fetchall()
    assert len(verdicts) == 5 and {(x, y) for _, x, y in verdicts} == {(a, b)}
    assert {o for o, _, _ in verdicts} <= {"win", "tie", "loss", "failed"}
