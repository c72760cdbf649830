"""Variants of a seed from the teacher's rows, and the selected row that names what it shows."""

from __future__ import annotations

from tasks.recycle import SimplePair, candidates, selection_rows
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


def test_selected_row_names_the_variant_whose_data_it_shows():
    rows = selection_rows(
        [score("a", "ori", 0.5, 0.5), score("a", "A", 0.4, 0.3), score("b", "ori", 0.5, 0.5)],
        teacher="t", student="s", prompt_version="v",
    )  # fmt: skip
    a, b = rows
    assert (a["kept"], a["variant"], a["output"], a["reason"]) == (True, "A", "y-A", "kept:A")
    # b has no A: the decision names A as missing, and the row shows (and says) ori.
    assert (b["kept"], b["variant"], b["output"], b["reason"]) == (False, "ori", "y-ori", "missing:A")
