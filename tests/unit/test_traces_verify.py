"""Trace structure, answer verification, and the math set."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.traces.mathgen import generate
from tasks.traces.validate import validate_trace
from tasks.traces.verify import extract_gold, verify

GOOD = (
    "<thinking>\n2 + 2 = 5.\n<reflection>No: 2 + 2 = 4.</reflection>\nSo 4.\n</thinking>\n"
    "<output>4</output>\n"
)


def test_valid_trace_parts():
    t = validate_trace(GOOD)
    assert t.valid and t.output == "4" and t.n_reflections == 1
    assert t.reflections == ("No: 2 + 2 = 4.",)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<output>4</output>", "output_before_thinking"),
        ("<thinking>x</thinking>", "no_output"),
        ("<thinking>a</thinking><thinking>b</thinking><output>4</output>", "multiple_thinking"),
        ("<thinking>a</thinking><reflection>r</reflection><output>4</output>", "reflection_outside_thinking"),
        ("<thinking>a</thinking><output>4</output><output>5</output>", "multiple_output"),
        ("<output>4</output><thinking>a</thinking>", "output_before_thinking"),
        ("Sure! <thinking>a</thinking><output>4</output>", "text_outside_tags"),
        ("<thinking>a</thinking><output>4</output> hope this helps", "text_outside_tags"),
        ("<thinking>a<reflection>r</thinking><output>4</output>", "unclosed_tag:reflection"),
        ("<thinking>a</thinking><output>4", "unclosed_tag:output"),
        ("<thinking>a</thinking><output>  </output>", "empty_output"),
        (
            "<thinking><reflection>a<reflection>b</reflection></reflection></thinking><output>4</output>",
            "nested_reflection",
        ),
        ("<thinking>a<output>4</output></thinking>", "output_inside_thinking"),
        ("", "no_thinking"),
    ],
)
def test_invalid_traces(text, reason):
    t = validate_trace(text)
    assert not t.valid and t.reason == reason


@given(st.text())
def test_validation_never_raises(text):
    validate_trace(text)


plain = st.text(alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)))


@given(plain, st.lists(plain, max_size=4), plain.filter(lambda s: s.strip()))
def test_generated_well_formed_trace_validates(thinking, reflections, output):
    body = thinking + "".join(f"<reflection>{r}</reflection>" for r in reflections)
    t = validate_trace(f"<thinking>{body}</thinking>\n<output>{output}</output>")
    assert t.valid and t.n_reflections == len(reflections) and t.output == output.strip()


def test_verification_numbers_choices_text():
    assert extract_gold("5 + 3 = 8.\n#### 8") == "8"
    assert verify("So the total is 1,250 dollars.", "1250") is True
    assert verify("It costs $42.00", "42") is True
    assert verify("The answer is 41.", "42") is False
    assert verify("The answer is (B).", "B") is True
    assert verify("C) because ...", "(C)") is True
    assert verify("Answer: D", "B") is False
    assert verify("Paris.", "paris") is True
    assert verify("anything", None) is None
    assert verify("50%", "0.5") is True


def test_a_number_found_by_chance_in_a_rambling_output_is_not_an_answer():
    # SmolLM2 on the math sample: an output of unrelated text whose last number equals the gold (2).
    rambling = (
        "The response must have 2 sections. Mark the beginning of each section with SECTION X, such "
        'as: SECTION 1 * SECTION 2\n* In your response, the word "response" should appear.\n* There'
    )
    assert verify(rambling, "2") is False
    # An answer, then another: not one answer. Working shown needs a marker.
    stated_twice = "It started with 22.\nThe number of shells Ava finished with is 23."
    assert verify(stated_twice, "23") is False and verify(stated_twice, "22") is False
    assert verify("8 * 12 = 96.\n96 + 7 = 103.", "103") is False
    assert verify("8 * 12 = 96.\n96 + 7 = 103.\nThe answer is 103.", "103") is True
    assert verify("Ava started with 23 shells; 23 it is.", "23") is True  # one value, said twice
    assert verify("The answer is 41 apples, not 42.", "41") is True  # the first after the marker
    assert verify("The answer is:\n103", "103") is True
    assert verify("Final answer: \\boxed{1,250}", "1250") is True
    assert verify("So 2.\n#### 8", "8") is True and verify("#### 8\nor maybe 2", "2") is False


def test_math_set_answers_are_computed():
    for p in generate(40, seed=3):
        assert extract_gold(p.answer) == str(p.gold)
        assert verify(f"<reasoning> the answer is {p.gold}", extract_gold(p.answer)) is True
    assert generate(5, seed=1) == generate(5, seed=1)
