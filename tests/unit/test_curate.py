"""Each curation step removes exactly the planted rows, and the pipeline reports every removal."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest

from storage.test_sets import read_benchmark, read_benchmarks
from tasks.curate import (
    Benchmark,
    Bound,
    BoundSpec,
    CurationConfig,
    Decontaminate,
    ExactDedup,
    Flag,
    NearDedup,
    NgramIndex,
    Top,
    TopSpec,
    Where,
    as_table,
    benchmark_texts,
    curate,
    score_summaries,
    size_category,
)
from tasks.curate.text import normalise
from tests.curate_fixtures import ids, planted_rows, write_benchmarks

PROMPT = ("instruction", "input")
ALL = ("instruction", "input", "output")


@pytest.fixture
def table() -> pa.Table:
    return as_table(planted_rows())


@pytest.fixture
def benchmarks(tmp_path: Path) -> list[Benchmark]:
    return read_benchmarks(write_benchmarks(tmp_path / "benchmarks"))


def removed(before: pa.Table, after: pa.Table) -> set[str]:
    return set(ids(before)) - set(ids(after))


def test_normalise_ignores_case_punctuation_and_spacing() -> None:
    assert normalise("  Create a LIST of tips,\tfor passive-income ideas!! ") == normalise(
        "create a list of tips for passive income ideas"
    )
    assert normalise("Ｃａｆé") == "café"  # NFKC folds full-width letters


def test_exact_dedup_removes_the_planted_duplicate_only(table: pa.Table) -> None:
    kept, report = ExactDedup(PROMPT).apply(table)
    assert removed(table, kept) == {"exact-dup"}
    assert report.removed == 1 and report.rows_in == table.num_rows
    assert report.details["duplicate_groups"] == 1
    assert ids(kept) == [i for i in ids(table) if i != "exact-dup"]  # order kept


def test_exact_dedup_on_the_whole_example_keeps_a_new_answer(table: pa.Table) -> None:
    kept, _ = ExactDedup(ALL).apply(table)
    assert removed(table, kept) == set()


def test_near_dedup_removes_the_planted_near_duplicate_only(table: pa.Table) -> None:
    kept, report = NearDedup(ALL, threshold=0.8).apply(table)
    assert removed(table, kept) == {"near-dup"}
    assert report.details["clusters"] == 1


def test_near_dedup_threshold_is_respected(table: pa.Table) -> None:
    # The planted pair's exact Jaccard is below 0.99: a stricter threshold keeps it.
    kept, report = NearDedup(ALL, threshold=0.99).apply(table)
    assert report.removed == 0 and kept.num_rows == table.num_rows


def test_near_dedup_is_deterministic(table: pa.Table) -> None:
    a, _ = NearDedup(ALL, threshold=0.5, seed=7).apply(table)
    b, _ = NearDedup(ALL, threshold=0.5, seed=7).apply(table)
    assert ids(a) == ids(b)


def test_decontamination_removes_each_planted_overlap(table: pa.Table, benchmarks: list[Benchmark]) -> None:
    step = Decontaminate(NgramIndex.build(benchmarks), ALL)
    kept, report = step.apply(table)
    assert removed(table, kept) == {
        "contam-lima", "contam-vicuna", "contam-sinstruct", "contam-wizardlm", "contam-koala",
    }  # fmt: skip
    per = report.details["benchmarks"]
    assert {name: v["rows_overlapping"] for name, v in per.items()} == {
        "koala": 1, "lima": 1, "sinstruct": 1, "vicuna": 1, "wizardlm": 1,
    }  # fmt: skip
    assert per["sinstruct"]["items"] == 1 and per["sinstruct"]["items_hit"] == 1
    assert "clean-koala-inside" in ids(kept)


def test_decontamination_of_the_prompt_only_misses_answer_overlaps(
    table: pa.Table, benchmarks: list[Benchmark]
) -> None:
    kept, _ = Decontaminate(NgramIndex.build(benchmarks), PROMPT).apply(table)
    assert "contam-wizardlm" not in removed(table, kept)  # its overlap is in the output


def test_ngram_size_is_configurable(benchmarks: list[Benchmark]) -> None:
    # With n = 20 the 13-word LIMA fragment no longer matches the 21-word prompt.
    rows = [r for r in planted_rows() if r["source_id"] == "contam-lima"]
    kept, _ = Decontaminate(NgramIndex.build(benchmarks, n=20), ALL).apply(as_table(rows))
    assert kept.num_rows == 1
    kept, _ = Decontaminate(NgramIndex.build(benchmarks, n=13), ALL).apply(as_table(rows))
    assert kept.num_rows == 0


def test_benchmark_texts_understands_each_layout() -> None:
    assert benchmark_texts({"text": "a b"}) == ["a b"]
    assert benchmark_texts({"prompt": "p"}) == ["p"]
    assert benchmark_texts({"Instruction": "w"}) == ["w"]
    assert benchmark_texts({"instruction": "i", "instances": [{"input": "x"}, {"input": ""}]}) == ["i", "x"]
    assert benchmark_texts({"conversations": "lima"}) == ["lima"]
    assert benchmark_texts({"conversations": ["q1", "a1", "q2", "a2"]}) == ["q1", "q2"]
    assert benchmark_texts(
        {"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}]}
    ) == ["h"]
    assert benchmark_texts(
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}
    ) == ["u"]
    assert benchmark_texts({"turns": ["t1", "t2"]}) == ["t1"]
    assert benchmark_texts({"id": 3}) == []


def test_benchmark_file_without_a_prompt_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad_test_set.jsonl"
    path.write_text('{"text": "fine"}\n{"answer": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"bad_test_set.jsonl:2: no prompt"):
        read_benchmark(path)


def test_bundled_benchmarks_load() -> None:
    root = Path(__file__).resolve().parents[2] / "data" / "benchmarks"
    sets = {b.name: len(b.items) for b in read_benchmarks(root)}
    assert sets == {"koala": 180, "lima": 300, "sinstruct": 252, "vicuna": 80, "wizardlm": 218}


def test_flags(table: pa.Table) -> None:
    kept, report = Flag("kept").apply(table)
    assert removed(table, kept) == {"not-kept"} and report.details["false"] == 1
    t = pa.table({"source_id": ["a", "b", "c"], "verified": pa.array([True, False, None])})
    assert ids(Flag("verified").apply(t)[0]) == ["a"]
    assert ids(Flag("verified", allow_null=True).apply(t)[0]) == ["a", "c"]


def test_bounds_never_pass_nan_or_null(table: pa.Table) -> None:
    kept, report = Bound("ifd_ppl", "<", 1).apply(table)
    assert removed(table, kept) == {"high-ifd", "nan-ifd"}
    assert report.details["missing_or_nan"] == 1
    # NaN sorts above every number in DuckDB; it still must not pass a lower bound.
    kept, _ = Bound("ifd_ppl", ">", 0.6).apply(table)
    assert "nan-ifd" not in ids(kept)


def test_bound_on_a_text_column_is_an_error(table: pa.Table) -> None:
    with pytest.raises(ValueError, match="not numbers"):
        Bound("instruction", "<", 1).apply(table)


def test_where_clause(table: pa.Table) -> None:
    kept, report = Where("ifd_ppl < 1 AND rifd_ppl < 1 AND variant = 'QA'").apply(table)
    assert all(v == "QA" for v in kept.column("variant").to_pylist())
    assert "nan-ifd" not in ids(kept) and "high-ifd" not in ids(kept)
    assert report.removed == table.num_rows - kept.num_rows
    assert kept.schema == table.schema  # rows come back untouched


def test_where_clause_cannot_read_files(table: pa.Table) -> None:
    with pytest.raises(ValueError, match="bad WHERE clause"):
        Where("(SELECT count(*) FROM read_csv('/etc/hostname')) > 0").apply(table)
    with pytest.raises(ValueError, match="bad WHERE clause"):
        Where("no_such_column > 1").apply(table)


def test_top_fraction_within_groups() -> None:
    t = pa.table(
        {
            "source_id": [f"r{i}" for i in range(10)],
            "g": ["a"] * 6 + ["b"] * 4,
            "s": [0.1, 0.9, 0.5, 0.7, float("nan"), 0.3, 0.2, 0.8, 0.4, 0.6],
        }
    )
    kept, report = Top("s", fraction=0.5, group_by="g").apply(t)
    # group a: 5 scored rows -> ceil(2.5) = 3 largest (0.9, 0.7, 0.5); group b: 2 (0.8, 0.6)
    assert ids(kept) == ["r1", "r2", "r3", "r7", "r9"]
    assert report.details["unscored"] == 1
    kept, _ = Top("s", k=2, largest=False).apply(t)
    assert ids(kept) == ["r0", "r6"]


def test_top_ties_break_by_table_order() -> None:
    t = pa.table({"source_id": ["a", "b", "c"], "s": [1.0, 1.0, 1.0]})
    assert ids(Top("s", k=2).apply(t)[0]) == ["a", "b"]


def test_config_parsing() -> None:
    assert BoundSpec.parse("ifd_ppl<1") == BoundSpec(column="ifd_ppl", op="<", value=1.0)
    assert BoundSpec.parse("rifd_ppl >= 0.25").op == ">="
    with pytest.raises(ValueError):
        BoundSpec.parse("ifd_ppl ~ 1")
    assert TopSpec.parse("0.1").fraction == 0.1
    assert TopSpec.parse("10%").fraction == pytest.approx(0.1)
    assert TopSpec.parse("500").k == 500
    with pytest.raises(ValueError):
        TopSpec.parse("2.5")
    with pytest.raises(ValueError):
        TopSpec(k=3, fraction=0.1)


def test_pipeline_reports_every_step(table: pa.Table, benchmarks: list[Benchmark]) -> None:
    config = CurationConfig(bounds=[BoundSpec.parse("ifd_ppl<1")], top=TopSpec(k=10))
    result = curate(table, config, benchmarks)
    names = [r.name for r in result.reports]
    assert names == [
        "require kept", "bound ifd_ppl < 1", "decontamination", "exact dedup", "near dedup", "top",
    ]  # fmt: skip
    assert [result.report(n).removed for n in names[:-1]] == [1, 2, 5, 1, 1]
    assert result.rows_out == 10
    assert sum(r.removed for r in result.reports) == result.rows_in - result.rows_out
    # require valid / verified do not apply to a selected table, and say so
    assert any("valid" in s for s in result.skipped) and any("verified" in s for s in result.skipped)
    survivors = set(ids(result.table))
    assert not survivors & {"exact-dup", "near-dup", "not-kept", "high-ifd", "nan-ifd"}
    assert not any(s.startswith("contam-") for s in survivors)


def test_pipeline_accepts_dicts_and_traces_columns() -> None:
    def trace(sid: str, q: str, answer: str, valid: bool, verified: bool | None) -> dict[str, object]:
        raw = f"<thinking>{q} is {answer}</thinking><output>{answer}</output>"
        return {"source_id": sid, "question": q, "raw_text": raw, "output": answer,
                "valid": valid, "verified": verified}  # fmt: skip

    traces = [
        trace("t1", "What is 2+2?", "4", True, True),
        trace("t2", "What is 3+3?", "6", False, None),
        trace("t3", "What is 5+5?", "11", True, False),
        trace("t4", "What is 9+1?", "10", True, None),
    ]
    result = curate(traces, CurationConfig())
    assert ids(result.table) == ["t1", "t4"]
    assert result.report("require valid").removed == 1
    assert result.report("require verified").removed == 1


def test_score_summaries_and_size_category(table: pa.Table) -> None:
    summaries = {s.column: s for s in score_summaries(table)}
    ifd = summaries["ifd_ppl"]
    assert ifd.missing == 1 and ifd.count == table.num_rows - 1
    assert ifd.quantiles[1.0] == pytest.approx(1.3)
    assert ifd.quantiles[0.0] == pytest.approx(0.5)
    assert math.isclose(sum(int(line.split()[2]) for line in ifd.histogram.splitlines()), ifd.count)
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K"
