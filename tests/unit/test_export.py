"""Formats, export parameters, the card and the CLI's option merging (no Hub, no files)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from flows.cli.export import build_curation
from storage.dataset_card import existing_sections
from storage.hub_export import ExportParams, lineage_of, multi_turn_rows, prepare, reproduce_command
from tasks.curate import CurationConfig, to_format
from tests.curate_fixtures import planted_rows

NO_DECONTAM = {"decontam": {"enabled": False}}


def test_alpaca_and_messages_formats() -> None:
    t = pa.table(
        {
            "source_id": ["a", "b"],
            "instruction": ["Translate.", "Say hi."],
            "input": ["Bonjour", None],
            "output": ["Hello", "Hi"],
        }
    )
    alpaca = to_format(t, "alpaca")
    assert alpaca.column_names == ["instruction", "input", "output"]
    assert alpaca.to_pylist()[1] == {"instruction": "Say hi.", "input": "", "output": "Hi"}
    msgs = to_format(t, "messages", extra_columns=["source_id"]).to_pylist()
    assert msgs[0]["messages"] == [
        {"role": "user", "content": "Translate.\n\nBonjour"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert msgs[0]["source_id"] == "a"


def test_an_exported_user_turn_is_the_one_its_scores_were_computed_on() -> None:
    """One rule for the user turn: an input of blanks is still an input, as scoring rendered it."""
    from tasks.scoring.templates import ChatFormat

    t = pa.table({"instruction": ["Sum."], "input": ["  "], "output": ["2"]})
    [row] = to_format(t, "messages").to_pylist()
    rendered = ChatFormat("chat", repr).prompt("Sum.", "  ")
    assert row["messages"][0]["content"] == "Sum.\n\n  "
    assert rendered == repr((("user", "Sum.\n\n  "),))


def test_a_stored_conversation_is_written_whole_ending_with_the_rows_exchange() -> None:
    convo = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Bye"),
             ("assistant", "Goodbye.")]  # fmt: skip
    t = pa.table(
        {
            "instruction": ["Bye", "Say hi."],
            "output": ["See you.", "Hi"],  # the first: a kept variant's answer replaces the stored one
            "messages": [[{"role": r, "content": c} for r, c in convo], None],
        }
    )
    rows = to_format(t, "messages").to_pylist()
    first = [(m["role"], m["content"]) for m in rows[0]["messages"]]
    assert first == [*convo[:-1], ("assistant", "See you.")]
    second = [(m["role"], m["content"]) for m in rows[1]["messages"]]
    assert second == [("user", "Say hi."), ("assistant", "Hi")]
    assert multi_turn_rows(to_format(t, "messages")) == 1  # what the card states
    assert multi_turn_rows(to_format(t, "alpaca")) == 0


def test_traces_format_uses_the_system_prompt_and_the_raw_trace() -> None:
    t = pa.table(
        {
            "source_id": ["t1"],
            "question": ["What is 2+2?"],
            "raw_text": ["<thinking>2+2=4</thinking>\n<output>4</output>"],
            "output": ["4"],
        }
    )
    with pytest.raises(ValueError, match="system prompt"):
        to_format(t, "traces")
    rows = to_format(t, "traces", system_prompt="SYS").to_pylist()
    assert rows[0]["messages"] == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<thinking>2+2=4</thinking>\n<output>4</output>"},
    ]
    # Alpaca of a trace row: the question and the whole trace.
    assert to_format(t, "alpaca").to_pylist()[0]["output"].startswith("<thinking>")


def test_traces_format_needs_trace_rows() -> None:
    t = pa.table({"instruction": ["x"], "output": ["y"]})
    with pytest.raises(ValueError, match="raw_text"):
        to_format(t, "traces", system_prompt="SYS")


def test_an_empty_response_names_the_row() -> None:
    t = pa.table({"source_id": ["ok", "bad"], "instruction": ["a", "b"], "output": ["y", " "]})
    with pytest.raises(ValueError, match=r"row 1 \(source_id 'bad'\): empty output"):
        to_format(t, "alpaca")


def test_params_validation() -> None:
    with pytest.raises(ValidationError, match="--repo"):
        ExportParams()
    with pytest.raises(ValidationError, match="ORG/NAME"):
        ExportParams(repo="no-slash")
    with pytest.raises(ValidationError, match="config name"):
        ExportParams(repo="org/x", config_name="data")
    assert ExportParams(repo="org/x").data_dir == "data"
    assert ExportParams(repo="org/x", config_name="chat").data_dir == "chat"


def test_reproduce_command_pins_the_version_and_quotes() -> None:
    params = ExportParams(store="/tmp/my store", repo="org/x", config_name="c", split_test=0.05, private=True)
    cmd = reproduce_command(params, 7)
    assert "--version 7" in cmd and "'/tmp/my store'" in cmd and "--private" in cmd
    assert "--split-test 0.05" in cmd and cmd.endswith("--curation-config curation.json")


def test_cli_options_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "curation.json"
    path.write_text(
        json.dumps({"where": "ifd_ppl < 1", "near_dedup": {"threshold": 0.7, "shingle_words": 3}})
    )
    config = build_curation(path, near_dup_threshold=0.9, top="10%", top_by="rifd_ppl", format="messages")
    assert config.where == "ifd_ppl < 1"
    assert config.near_dedup.threshold == 0.9 and config.near_dedup.shingle_words == 3
    assert (
        config.top is not None and config.top.fraction == pytest.approx(0.1) and config.top.by == "rifd_ppl"
    )
    assert config.format == "messages"
    config = build_curation(
        None, require=["kept", "verified=true_or_null"], exact_dedup="off", no_decontam=True
    )
    assert config.require == {"kept": "true", "verified": "true_or_null"}
    assert not config.exact_dedup.enabled and not config.decontam.enabled
    with pytest.raises(ValidationError):
        build_curation(None, near_dup_threshold=1.5)
    with pytest.raises(ValidationError):
        build_curation(None, format="csv")


def test_card_states_the_statistics_and_keeps_other_configs() -> None:
    from huggingface_hub import DatasetCard

    from storage.hub_export import _card

    table = pa.Table.from_pylist(planted_rows())
    lineage = lineage_of(table, store="/s", table="selected", version=3)
    first = prepare(
        ExportParams(repo="org/x", config_name="one", curation=CurationConfig(**NO_DECONTAM)), table, lineage
    )
    card1 = _card(first, ExportParams(repo="org/x", config_name="one"), None, None)
    second = prepare(
        ExportParams(
            repo="org/x", config_name="two", curation=CurationConfig(format="messages", **NO_DECONTAM)
        ),
        table,
        lineage,
    )
    card2 = _card(second, ExportParams(repo="org/x", config_name="two", license="cc-by-nc-4.0"), card1, None)
    parsed = DatasetCard(card2)
    assert parsed.data.license == "cc-by-nc-4.0"
    assert parsed.data.task_categories == ["text-generation"]
    assert parsed.data.size_categories == ["n<1K"]
    sections = existing_sections(parsed.text)
    assert list(sections) == ["one", "two"]
    assert sections["one"] == existing_sections(DatasetCard(card1).text)["one"]  # kept verbatim
    two = sections["two"]
    assert "`messages` format" in two and "at Delta version 3" in two
    assert "| require kept | kept is true | 31 | 1 | 30 |" in two
    assert re.search(r"\| ifd_ppl \| exported \| \d+ \| 1 \|", two)  # the NaN row is counted as missing
    assert "Histogram of `rifd_ppl`" in two
    assert "Not checked against any benchmark" in two
    assert "reflectory export --store ./factory --table selected --version 3" in two
    # A re-export of config "one" replaces its section instead of adding a second one.
    card3 = _card(first, ExportParams(repo="org/x", config_name="one"), card2, None)
    assert list(existing_sections(DatasetCard(card3).text)) == ["one", "two"]


def test_traces_export_carries_the_reflection_system_prompt() -> None:
    from tasks.prompts import render, version

    def trace(i: int) -> dict[str, object]:
        raw = f"<thinking>{i}+{i}={2 * i}</thinking><output>{2 * i}</output>"
        return {"run_id": "r", "source_id": f"t{i}", "teacher": "hf:t", "question": f"What is {i} + {i}?",
                "raw_text": raw, "output": str(2 * i), "valid": i != 1,
                "verified": None if i == 2 else i != 3, "ifd_ppl": 0.5}  # fmt: skip

    rows = [trace(i) for i in range(5)]
    params = ExportParams(
        repo="org/traces", table="traces", curation=CurationConfig(format="traces", **NO_DECONTAM)
    )
    table = pa.Table.from_pylist(rows)
    prepared = prepare(params, table, lineage_of(table, table="traces"))
    train = prepared.dataset["train"]
    assert train.num_rows == 3  # t1 invalid, t3 failed verification; t2 had no gold answer: kept
    first = train[0]["messages"]
    assert first[0] == {"role": "system", "content": render("trace_system")}
    assert first[2]["content"].startswith("<thinking>")
    assert prepared.section.system_prompt_version == version("trace_system")


def test_the_card_names_the_scoring_rule_and_flags_unversioned_scores() -> None:
    from storage.hub_export import UNVERSIONED_SCORES, _card

    rows = planted_rows()
    assert lineage_of(pa.Table.from_pylist(rows)).scoring_versions == [UNVERSIONED_SCORES]
    versioned = [{**r, "scoring_version": "scoring/v2"} for r in rows]
    table = pa.Table.from_pylist(versioned)
    lineage = lineage_of(table, table="selected")
    assert lineage.scoring_versions == ["scoring/v2"]
    mixed = pa.Table.from_pylist([*versioned[:3], {**rows[3], "scoring_version": None}])
    assert lineage_of(mixed).scoring_versions == ["scoring/v2", UNVERSIONED_SCORES]
    params = ExportParams(repo="org/x", curation=CurationConfig(**NO_DECONTAM))
    card = _card(prepare(params, table, lineage), params, None, None)
    assert "| scoring rules | `scoring/v2` |" in card


def test_min_rating_keeps_pairs_the_judge_rated_high_enough_and_the_card_states_the_verdicts(
    tmp_path: Path,
) -> None:
    """Judgements joined onto selected rows (in the store) in the rows' own order; min_rating drops
    rows below it and rows without a rating; the card states the judge's verdicts."""
    from storage.hub_export import read_from_store
    from storage.store import Store

    rows = [r for r in planted_rows() if r["kept"]][:6]
    store = Store(str(tmp_path / "s"), create=True)
    store.append("selected", [{**r, "run_id": "r1"} for r in rows])
    ratings = [9.0, 7.0, None, 8.0, 10.0]  # the sixth row has no judgement at all
    outcomes = ["win", "tie", "failed", "loss", "win"]
    store.append(
        "judgements",
        [
            {"run_id": "r1", "source_id": r["source_id"], "rating": x, "outcome": o, "judge": "hf:j"}
            for r, x, o in zip(rows, ratings, outcomes, strict=False)
        ],
    )
    table, lineage = read_from_store(store, "selected")
    assert table.column("source_id").to_pylist() == [r["source_id"] for r in rows]
    assert table.column("judge_rating").to_pylist() == [*ratings, None]
    params = ExportParams(to_dir=str(tmp_path / "out"), curation=CurationConfig(min_rating=8, **NO_DECONTAM))
    prepared = prepare(params, table, lineage)
    kept = prepared.result.table.column("source_id").to_pylist()
    assert kept == [rows[i]["source_id"] for i in (0, 3, 4)]
    assert prepared.section.judge is not None
    assert (prepared.section.judge["wins"], prepared.section.judge["losses"]) == (2, 1)
    assert prepared.section.judge["mean_rating"] == "9.00" and prepared.section.judge["models"] == ["hf:j"]
    with pytest.raises(ValueError, match="min_rating 8 needs the judge's ratings"):
        prepare(params, pa.Table.from_pylist(rows), lineage)


def test_sharegpt_writes_the_conversation_as_from_and_value_turns() -> None:
    convo = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Bye"),
             ("assistant", "Goodbye.")]  # fmt: skip
    t = pa.table({"instruction": ["Bye"], "output": ["See you."],
                  "messages": [[{"role": r, "content": c} for r, c in convo]]})  # fmt: skip
    [row] = to_format(t, "sharegpt").to_pylist()
    assert [(m["from"], m["value"]) for m in row["conversations"]] == [
        ("system", "Be brief."), ("human", "Hi"), ("gpt", "Hello."), ("human", "Bye"), ("gpt", "See you.")
    ]  # fmt: skip
    assert multi_turn_rows(to_format(t, "sharegpt")) == 1


def test_conversations_that_end_alike_after_different_histories_are_not_duplicates() -> None:
    from tasks.curate import CurationConfig, curate

    def convo(first: str) -> list[dict[str, str]]:
        turns = [("user", first), ("assistant", "Apple."), ("user", "Another?"), ("assistant", "Pear.")]
        return [{"role": r, "content": c} for r, c in turns]

    t = pa.table({
        "instruction": ["Another?", "Another?", "Another?", "Name a fruit.", "Name a fruit."],
        "input": [""] * 5,
        "output": ["Pear.", "Plum.", "Pear.", "Apple.", "Kiwi."],
        "messages": [convo("Name a fruit."), convo("Name a red fruit."), convo("Name a fruit."), None, None],
    })  # fmt: skip
    result = curate(t, CurationConfig(decontam={"enabled": False}, near_dedup={"enabled": False}))
    # The third repeats the first conversation; the last repeats a single-turn prompt (as before).
    assert result.table.column("output").to_pylist() == ["Pear.", "Plum.", "Apple."]
    assert result.table.column_names == t.column_names  # the derived history text is not exported
