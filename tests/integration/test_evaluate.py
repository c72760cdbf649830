"""``reflectory run evaluate`` on the tiny model with a scripted judge: two arms at equal N, each a
model folder that learned, every item judged in both orders, an interval around the winning score,
and a rerun that trains nothing and asks the judge nothing."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from storage.browse import Browser
from storage.report.page import write_report
from storage.store import Store
from storage.test_sets import read_test_sets
from tests.cli import reflectory
from tests.judge_server import judge_server
from tests.tables import run_row

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def prefer_longer(first: str, second: str, question: str) -> str:
    """A judge that prefers the longer answer, whichever order it is shown in."""
    if len(first) == len(second):
        return "5 5\nEqual."
    return "8 3\nThe first is fuller." if len(first) > len(second) else "3 8\nThe second is fuller."


def write_arms(tmp: Path) -> tuple[Path, Path]:
    [test_question] = read_test_sets(["vicuna"], ROOT / "data" / "benchmarks", limit=1)
    a = [
        {"instruction": f"Say the number {i}.", "output": f"The number is {i}, and only {i}."}
        for i in range(6)
    ]
    a.append({"instruction": test_question.question, "output": "An answer to a test question."})
    b = [{"instruction": f"Name {i} fruits.", "output": "Apples."} for i in range(9)]
    paths = tmp / "a.jsonl", tmp / "b.jsonl"
    for path, rows in zip(paths, (a, b), strict=True):
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return paths


def test_evaluate_trains_both_arms_judges_both_orders_and_resumes(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    a, b = write_arms(tmp_path)
    store = tmp_path / "store"
    with judge_server(prefer_longer) as judge:
        args = ["run", "evaluate", "--base", f"hf:{tiny_model_path}", "--train-a", str(a),
                "--train-b", str(b), "--judge", f"openai:judge@{judge.url}", "--limit", "1",
                "--max-tokens", "8", "--lr", "1e-2", "--json", "--store", str(store),
                "--run-id", "ev"]  # fmt: skip
        first = reflectory(*args)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        asked = len(judge.requests)
        again = reflectory(*args)
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(judge.requests) == asked  # nothing asked twice
    got, rerun = json.loads(first.stdout), json.loads(again.stdout)
    arm_a, arm_b = got["arms"]
    # Equal N: A lost its test-set row, B was sampled down to A's size.
    assert (arm_a["read"], arm_a["contaminated"], arm_b["read"], arm_b["sampled_out"]) == (7, 1, 9, 3)
    assert arm_a["examples"] == arm_b["examples"] == got["equal_n"] == 6
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path).state_dict()
    for arm in (arm_a, arm_b):
        assert arm["loss_last"] < arm["loss_first"] and arm["trained_now"]
        tuned = AutoModelForCausalLM.from_pretrained(arm["model"]).state_dict()
        assert any(not torch.equal(base[k], tuned[k]) for k in base)
    total = got["total"]
    assert total["wins"] + total["ties"] + total["losses"] + total["failed"] == total["n"] == 5
    low, high = got["winning_score_ci"]
    assert low <= total["winning_score"] <= high
    assert asked == 2 * total["n"]  # every item in both orders
    shown: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for question, shown_first, shown_second in judge.prompts():
        shown[question].append((shown_first, shown_second))
    assert len(shown) == total["n"] and all(len(s) == 2 and s[0] == s[1][::-1] for s in shown.values())
    # The rerun trained nothing and found the same verdicts.
    assert [arm["trained_now"] for arm in rerun["arms"]] == [False, False] and rerun["total"] == total
    st = Store(str(store))
    assert run_row(st, "ev", "flow", "status") == ("evaluate", "completed")
    assert st.sql("SELECT count(*) FROM trainings WHERE run_id = 'ev'").fetchall() == [(2,)]
    assert json.loads(run_row(st, "ev", "config_json")[0])["train_a"] == str(a)
    assert any(r["run_id"] == "ev" and r["flow"] == "evaluate" for r in Browser(st).runs())
    # The report page: the papers' stacked bars and each arm's loss curve.
    page = write_report(st, "ev", tmp_path / "reports").read_text()
    assert "Training loss of each arm" in page and "the papers' pairwise evaluation" in page


def test_a_source_run_that_is_not_in_the_store_is_one_line(tmp_path: Path, tiny_model_path: Path) -> None:
    store = tmp_path / "store"
    Store(str(store), create=True).append("seeds", [])
    out = reflectory("run", "evaluate", "--base", f"hf:{tiny_model_path}", "--run", "no-such-run",
                     "--judge", f"hf:{tiny_model_path}", "--store", str(store),
                     "--run-id", "ev-missing")  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error:" in out.stderr and "selected" in out.stderr
