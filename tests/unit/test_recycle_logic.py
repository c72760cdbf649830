"""Variants of a seed from the teacher's rows, and the selected row that names what it shows."""

from __future__ import annotations

from tasks.engine import failure_cause
from tasks.recycle.variants import SimplePair, candidates, request_failures, selection_rows
from tasks.teacher.stages import ReflectionRow


def reflection(source_id: str, stage: str, **parsed: str | None) -> ReflectionRow:
    return ReflectionRow(
        source_id=source_id, stage=stage, teacher="t", prompt_version="v",
        instruction="", input="", output="",
        raw_text="", new_instruction=parsed.get("new_instruction"), new_answer=parsed.get("new_answer"),
        better_answer=parsed.get("better_answer"), parse_status="ok" if parsed else "missing_better_answer",
        prompt_tokens=0, completion_tokens=0, latency_s=0.0, finish_reason="stop", sampling_json="{}",
    )  # fmt: skip


def score(source_id: str, variant: str, ifd: float, rifd: float) -> dict:
    return {"source_id": source_id, "variant": variant, "instruction": f"x-{variant}", "input": "",
            "output": f"y-{variant}", "ifd_ppl": ifd, "rifd_ppl": rifd}  # fmt: skip


def test_candidates_build_the_four_variants_where_they_exist():
    seeds = [SimplePair("a", "x0", "in", "y0"), SimplePair("b", "x0b", "", "y0b")]
    ins = [
        reflection("a", "instruction", new_instruction="x1", new_answer="y1"),
        reflection("b", "instruction"),
    ]
    resp = [
        reflection("a", "response_original", better_answer="y0'"),
        reflection("a", "response_reflected", better_answer="y1'"),
        reflection("b", "response_original", better_answer="y0b'"),
    ]
    got = [(c.source_id, c.variant, c.instruction, c.input, c.output) for c in candidates(seeds, ins, resp)]
    assert got == [
        ("a", "ori", "x0", "in", "y0"),
        ("a", "Q", "x1", "", "y1"),
        ("a", "A", "x0", "in", "y0'"),
        ("a", "QA", "x1", "", "y1'"),
        ("b", "ori", "x0b", "", "y0b"),
        ("b", "A", "x0b", "", "y0b'"),
    ]


def test_every_variant_of_a_conversation_keeps_its_history_and_replaces_the_last_exchange():
    history = (("system", "Be brief."), ("user", "Name a fruit."), ("assistant", "Apple."))
    seeds = [SimplePair("c", "Another?", "", "Pear.", history)]
    ins = [reflection("c", "instruction", new_instruction="Another, and why?", new_answer="Pear: sweet.")]
    resp = [reflection("c", "response_original", better_answer="Pear."),
            reflection("c", "response_reflected", better_answer="Pear, as it is sweet.")]  # fmt: skip
    got = candidates(seeds, ins, resp)
    assert [c.variant for c in got] == ["ori", "Q", "A", "QA"]
    assert all(c.text.history == history for c in got)
    assert got[1].text.instruction == "Another, and why?"


def test_selected_row_names_the_variant_whose_data_it_shows():
    rows = selection_rows(
        [score("a", "ori", 0.5, 0.5), score("a", "A", 0.4, 0.3), score("b", "ori", 0.5, 0.5)],
        teacher="t", student="s", prompt_version="v",
    )  # fmt: skip
    a, b = rows
    assert (a["kept"], a["variant"], a["output"], a["reason"]) == (True, "A", "y-A", "kept:A")
    # b has no A: the decision names A as missing, and the row shows (and says) ori.
    assert (b["kept"], b["variant"], b["output"], b["reason"]) == (False, "ori", "y-ori", "missing:A")


def failed(source_id: str, stage: str, status: str) -> ReflectionRow:
    row = reflection(source_id, stage)
    return ReflectionRow(**{**row.to_dict(), "parse_status": status})


def test_a_pair_whose_teacher_requests_failed_alone_is_dropped_with_the_cause():
    too_long = "prompt_too_long: 9000 tokens > 8191"
    reflections = [
        failed("long", "instruction", too_long),
        failed("long", "response_original", too_long),
        failed("bad", "response_original", "rejected: grammar did not compile"),
        reflection("parse", "response_original"),  # an unparseable reply: not a request failure
    ]
    failures = request_failures(reflections)
    assert failures == {
        "long": {"Q": "prompt_too_long", "QA": "prompt_too_long", "A": "prompt_too_long"},
        "bad": {"A": "rejected"},
    }
    rows = selection_rows(
        [score("long", "ori", float("nan"), float("nan")), score("bad", "ori", 0.5, 0.5),
         score("parse", "ori", 0.5, 0.5), score("ok", "ori", 0.5, 0.5), score("ok", "A", 0.4, 0.3)],
        teacher="t", student="s", prompt_version="v", failures=failures,
    )  # fmt: skip
    reasons = {r["source_id"]: r["reason"] for r in rows}
    assert reasons == {
        "long": "failed:prompt_too_long",  # ori unscorable too (its prompt filled the window)
        "bad": "failed:rejected",
        "parse": "missing:A",  # parse failures keep their own reason
        "ok": "kept:A",
    }
    assert len(rows) == 5 - 1  # one row per pair


def test_a_kept_pair_keeps_its_reason_even_when_another_branch_failed():
    failures = {"a": {"Q": "prompt_too_long", "QA": "prompt_too_long"}}
    rows = selection_rows(
        [score("a", "ori", 0.5, 0.5), score("a", "A", 0.4, 0.3)],
        teacher="t", student="s", prompt_version="v", failures=failures,
    )  # fmt: skip
    assert rows[0]["reason"] == "kept:A"


def test_failure_causes_are_the_text_before_the_first_colon():
    assert failure_cause("prompt_too_long: 5832 tokens > 2048") == "prompt_too_long"
    assert failure_cause("engine_error:HTTPError: boom") == "engine_error"
    assert failure_cause("missing_better_answer") == "missing_better_answer"
