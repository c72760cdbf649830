"""Reflection parsers: each tolerated deviation, each rejection reason, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.teacher.parse import parse_instruction_reflection, parse_response_reflection

WELL_FORMED = (
    "The instruction is vague.\n[New Instruction] List three causes of inflation. [End]\n"
    "[New Answer] Demand, costs and money supply. [End]"
)


def test_well_formed():
    p = parse_instruction_reflection(WELL_FORMED, "stop")
    assert (
        p.ok
        and p.new_instruction == "List three causes of inflation."
        and p.new_answer == "Demand, costs and money supply."
    )


@pytest.mark.parametrize(
    "text",
    [
        # missing [End] at the very end
        "[New Instruction] I [End]\n[New Answer] A",
        # markdown bold around tags
        "**[New Instruction]** I [End]\n**[New Answer]** A [End]",
        # heading markers
        "### [New Instruction]\nI\n[End]\n### [New Answer]\nA\n[End]",
        # extra whitespace and another case
        "[ new  instruction ]   I   [END]\n\n\n[NEW ANSWER]\tA\t[end]",
        # colon after the tag
        "[New Instruction]: I [End] [New Answer]: A [End]",
        # a section closed by the next tag instead of [End]
        "[New Instruction] I\n[New Answer] A [End]",
    ],
)
def test_tolerated_deviations(text):
    p = parse_instruction_reflection(text, "stop")
    assert p.ok, p.status
    assert (p.new_instruction, p.new_answer) == ("I", "A")


@pytest.mark.parametrize(
    ("text", "finish", "status"),
    [
        ("", "stop", "empty"),
        ("   \n", "stop", "empty"),
        ("Just a critique, no tags.", "stop", "missing_new_instruction"),
        ("[New Instruction] I [End]", "stop", "missing_new_answer"),
        ("[New Instruction] I [End] [New Answer] A very long answer that got cut", "length", "truncated"),
        ("[New Instruction] I [End] and then the model ran out of", "length", "truncated"),
        ("[New Instruction] [End] [New Answer] A [End]", "stop", "empty:new_instruction"),
        (
            "[New Instruction] I [End] [New Instruction] J [End] [New Answer] A [End]",
            "stop",
            "duplicate_tag:new_instruction",
        ),
    ],
)
def test_rejections(text, finish, status):
    assert parse_instruction_reflection(text, finish).status == status


def test_response_reflection():
    assert parse_response_reflection("Critique.\n[Better Answer] B [End]", "stop").better_answer == "B"
    assert parse_response_reflection("Critique only.", "stop").status == "missing_better_answer"
    assert parse_response_reflection("[Better Answer] cut off here", "length").status == "truncated"
    assert parse_response_reflection("[Better Answer] **B** [End]").better_answer == "B"


section = st.text(
    alphabet=st.characters(blacklist_characters="[]*_#:", blacklist_categories=("Cs",)), min_size=1
).filter(lambda s: s.strip())


@given(
    st.text(alphabet=st.characters(blacklist_characters="[]", blacklist_categories=("Cs",))), section, section
)
def test_well_formed_reply_always_parses_to_its_parts(critique, instruction, answer):
    text = f"{critique}\n[New Instruction] {instruction} [End]\n[New Answer] {answer} [End]"
    p = parse_instruction_reflection(text, "stop")
    assert p.ok
    assert p.new_instruction == instruction.strip() and p.new_answer == answer.strip()


@given(st.text(), st.sampled_from([None, "stop", "length"]))
def test_no_input_makes_the_parsers_raise(text, finish):
    assert parse_instruction_reflection(text, finish).status
    assert parse_response_reflection(text, finish).status
