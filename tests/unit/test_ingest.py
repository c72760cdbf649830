"""Ingest: every bad row is rejected with its line and reason; every good row loads once, in order."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.sources import load_pairs, load_questions, read_records
from tasks.ingest.records import Pair, Reject, normalise

GOOD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_every_kind_of_bad_row_is_rejected_and_the_rest_load(tmp_path: Path) -> None:
    j = lambda obj: json.dumps(obj).encode()  # noqa: E731
    lines = [
        j(GOOD),  # 1 ok
        b'{"instruction": "broken",',  # 2 invalid_json
        j([1, 2]),  # 3 not_an_object
        j({"instruction": "no output"}),  # 4 missing_field:output
        j({"instruction": "  ", "output": "x"}),  # 5 empty_field:instruction
        j({"instruction": 5, "output": "x"}),  # 6 wrong_type:instruction
        b'{"instruction": "caf\xe9", "output": "x"}',  # 7 invalid_utf8
        j({"instruction": "long", "output": "y" * 200}),  # 8 too_long:output
        j({"something": "else"}),  # 9 unknown_format
        j({"prompt": "Say hi.", "response": "Hi!"}),  # 10 ok
        b"",  # 11 blank: skipped
        j(GOOD),  # 12 duplicate of 1
        j({"messages": [{"role": "user", "content": "q"}]}),  # 13 ends_without_answer
        j({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}),  # 14
        j(
            {
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "human", "value": "q2"},
                    {"from": "gpt", "value": "a"},
                ]
            }
        ),  # 15 two user turns in a row
        j({"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}),  # 16
        j({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}),  # 17
    ]
    result = load_pairs(str(write_jsonl(tmp_path / "in.jsonl", lines)), max_chars=100)
    assert [(r.line, r.reason) for r in result.rejects] == [
        (2, "invalid_json"),
        (3, "not_an_object"),
        (4, "missing_field:output"),
        (5, "empty_field:instruction"),
        (6, "wrong_type:instruction"),
        (7, "invalid_utf8"),
        (8, "too_long:output"),
        (9, "unknown_format"),
        (13, "ends_without_answer"),
        (14, "starts_with_assistant"),
        (15, "two_user_turns_in_a_row"),
        (16, "unknown_role:messages[1]"),
        (17, "empty_field:messages[1].content"),
    ]
    assert [p.source_line for p in result.pairs] == [1, 10]
    assert result.n_duplicates == 1


def test_same_content_same_id_across_formats(tmp_path: Path) -> None:
    rows = [GOOD, {"instruction": "Add 2 and 2.", "input": "Show work.", "output": "4"}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    write_jsonl(tmp_path / "a.jsonl", [json.dumps(r).encode() for r in rows])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    with (tmp_path / "a.csv").open("w") as fh:
        fh.write("instruction,input,output\n")
        fh.write('Name a colour.,,Blue.\n"Add 2 and 2.",Show work.,4\n')
    ids = {
        ext: [p.id for p in load_pairs(str(tmp_path / f"a.{ext}")).pairs]
        for ext in ("json", "jsonl", "parquet", "csv")
    }
    assert len({tuple(v) for v in ids.values()}) == 1
    assert len(ids["json"]) == 2


def test_sharegpt_and_messages_shapes_keep_every_message() -> None:
    share = {
        "conversations": [
            {"from": "system", "value": "s"},
            {"from": "human", "value": "Q"},
            {"from": "gpt", "value": "A"},
        ]
    }
    msgs = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    a, b = normalise(share, 1), normalise(msgs, 2)
    assert isinstance(a, Pair) and isinstance(b, Pair)
    assert (a.instruction, a.output) == (b.instruction, b.output) == ("Q", "A")
    assert a.messages == (("system", "s"), ("user", "Q"), ("assistant", "A"))
    assert b.messages == (("user", "Q"), ("assistant", "A")) and a.exchanges == b.exchanges == 1
    # The system prompt is part of the row: two seeds. One exchange alone has the id of the same
    # pair written as Alpaca, as it always had.
    alpaca = normalise({"instruction": "Q", "output": "A"}, 3)
    assert isinstance(alpaca, Pair) and alpaca.messages == b.messages
    assert a.id != b.id and b.id == alpaca.id


def test_a_conversation_is_its_last_exchange_with_every_message_kept() -> None:
    def convo(first: str) -> dict:
        turns = [("system", "Be brief."), ("user", first), ("assistant", "Noted."),
                 ("user", "And now?"), ("assistant", "Done.")]  # fmt: skip
        return {"messages": [{"role": r, "content": c} for r, c in turns]}

    one, other = normalise(convo("Plan a trip."), 1), normalise(convo("Plan a party."), 2)
    assert isinstance(one, Pair) and isinstance(other, Pair)
    assert (one.instruction, one.input, one.output) == ("And now?", "", "Done.")
    assert len(one.messages) == 5 and one.exchanges == 2
    assert one.id != other.id  # the same last exchange after different histories: two seeds
    # The history is what comes before the last user message; a single-turn row has none.
    assert one.history == (("system", "Be brief."), ("user", "Plan a trip."), ("assistant", "Noted."))
    alone = normalise(GOOD, 3)
    assert isinstance(alone, Pair) and alone.history == ()


def test_user_message_joins_input_after_a_blank_line() -> None:
    p = normalise({"instruction": "Sum.", "input": "1 2", "output": "3"}, 1)
    assert isinstance(p, Pair) and p.user_message == "Sum.\n\n1 2"


def test_folder_and_unknown_extension(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [json.dumps(GOOD).encode()])
    write_jsonl(tmp_path / "a.jsonl", [json.dumps({"prompt": "x", "response": "y"}).encode()])
    lines = [line for line, *_ in read_records(str(tmp_path))]
    assert lines == [1, 2]
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown input format"):
        list(read_records(str(tmp_path / "c.txt")))
    with pytest.raises(FileNotFoundError):
        list(read_records(str(tmp_path / "missing.jsonl")))


def test_saved_hf_dataset(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list([GOOD]).save_to_disk(str(tmp_path / "ds"))
    assert [p.output for p in load_pairs(str(tmp_path / "ds")).pairs] == ["Blue."]
    # Datasets holding conversations, ShareGPT's or messages, are read whole.
    turns = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Bye"),
             ("assistant", "Goodbye.")]  # fmt: skip
    sharegpt = {"system": "system", "user": "human", "assistant": "gpt"}
    for name, row in (
        ("sharegpt", {"conversations": [{"from": sharegpt[r], "value": c} for r, c in turns]}),
        ("messages", {"messages": [{"role": r, "content": c} for r, c in turns]}),
    ):
        datasets.Dataset.from_list([row]).save_to_disk(str(tmp_path / name))
        [pair] = load_pairs(str(tmp_path / name)).pairs
        assert pair.messages == tuple(turns) and pair.history == tuple(turns[:3])


@given(
    st.dictionaries(
        st.sampled_from(["instruction", "input", "output", "prompt", "response", "messages", "x"]),
        st.one_of(st.none(), st.text(), st.integers(), st.lists(st.dictionaries(st.text(), st.text()))),
    )
)
def test_normalise_never_raises(record: dict) -> None:
    assert isinstance(normalise(record, 1), (Pair, Reject))


def test_questions_keep_order_drop_duplicates_and_name_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    rows = [
        {"question": "What is 2 + 2?", "answer": "#### 4"},
        {"problem": "Name a colour."},
        {"question": "What is 2 + 2?", "answer": "#### 4"},
        {"answer": "no question"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{oops\n")
    got = load_questions(str(path))
    assert [(q.question, q.answer, q.source_line) for q in got.questions] == [
        ("What is 2 + 2?", "#### 4", 1),
        ("Name a colour.", None, 2),
    ]
    assert got.n_duplicates == 1
    assert [(r.line, r.reason) for r in got.rejects] == [(4, "missing_field:question"), (5, "invalid_json")]


def test_the_score_command_scores_a_conversations_last_answer_after_its_history(tmp_path: Path) -> None:
    from storage.score_io import read_scoring_rows

    turns = [("user", "Hi"), ("assistant", "Hello."), ("user", "Bye"), ("assistant", "Goodbye.")]
    convo = {"messages": [{"role": r, "content": c} for r, c in turns]}
    path = write_jsonl(tmp_path / "in.jsonl", [json.dumps(GOOD).encode(), json.dumps(convo).encode()])
    rows = read_scoring_rows(str(path))
    assert [r.error for r in rows] == [None, None]
    assert rows[1].pair is not None and rows[1].pair.history == (("user", "Hi"), ("assistant", "Hello."))
    assert (rows[1].pair.instruction, rows[1].pair.response) == ("Bye", "Goodbye.")


def test_every_answered_turn_comes_with_the_messages_before_it() -> None:
    from tasks.conversation import answered_turns

    convo = (("system", "s"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"))
    assert answered_turns(convo) == [((("system", "s"),), "q1", "a1"), (convo[:3], "q2", "a2")]
    with pytest.raises(ValueError, match="message 0 answers no user message"):
        answered_turns((("assistant", "a"),))
