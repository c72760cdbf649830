"""Reply forms: the parsers accept every string the grammars admit, and budgets fit ``max_tokens``.

Strings are drawn from the grammar itself: hypothesis picks, token by token, one of the tokens the
form's llguidance matcher allows (over a real byte-level BPE tokenizer), until the grammar is done.
Whatever that walk produces is, by construction, a string the grammar admits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.judge.protocol import parse_rating, parse_score_pair
from tasks.teacher.forms import (
    fitting_form,
    form_note,
    instruction_form,
    judge_form,
    loads_object,
    response_form,
    trace_form,
    trace_from_json,
)
from tasks.teacher.parse import OK, parse_instruction_reflection, parse_response_reflection
from tasks.traces.validate import validate_trace


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The token count of a text with a real byte-level BPE tokenizer (the tiny model's)."""
    from transformers import AutoTokenizer

    from infra.models.tiny import _write_tokenizer

    folder: Path = tmp_path_factory.mktemp("bpe")
    _write_tokenizer(folder)
    hf = AutoTokenizer.from_pretrained(folder)
    return lambda text: len(hf(text, add_special_tokens=False).input_ids)


@pytest.fixture(scope="module")
def walker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import llguidance
    import llguidance.hf
    import numpy as np
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask
    from transformers import AutoTokenizer

    from infra.models.tiny import _write_tokenizer

    folder: Path = tmp_path_factory.mktemp("tok")
    _write_tokenizer(folder)
    hf = AutoTokenizer.from_pretrained(folder)
    tok = llguidance.hf.from_tokenizer(hf)

    def walk(lark: str, data: st.DataObject) -> str:
        matcher = llguidance.LLMatcher(tok, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0)
        assert not matcher.is_error(), matcher.get_error()
        mask = allocate_token_bitmask(1, tok.vocab_size)
        out: list[int] = []
        while not matcher.is_stopped():
            fill_next_token_bitmask(matcher, mask)
            bits = np.unpackbits(mask[0].view(np.uint8), bitorder="little")[: tok.vocab_size]
            allowed = [int(t) for t in np.nonzero(bits)[0] if t != tok.eos_token]
            if not allowed:  # only the end is left
                break
            t = data.draw(st.sampled_from(allowed))
            assert matcher.consume_token(t), matcher.get_error()
            out.append(t)
        assert matcher.is_accepting()
        return str(tok.decode_str(out))

    return walk


SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(data=st.data())
def test_the_instruction_parser_accepts_what_its_grammar_admits(walker: Any, data: st.DataObject) -> None:
    text = walker(instruction_form(160).lark(), data)
    parsed = parse_instruction_reflection(text, "stop")
    assert parsed.status == OK, text
    fields = loads_object(text)  # json.loads, after dropping a half escape at a field's cut
    assert fields is not None, text
    assert parsed.new_instruction == fields["new_instruction"].strip()
    assert parsed.new_answer == fields["new_answer"].strip()


@SETTINGS
@given(data=st.data())
def test_the_response_parser_accepts_what_its_grammar_admits(walker: Any, data: st.DataObject) -> None:
    text = walker(response_form(120).lark(), data)
    parsed = parse_response_reflection(text, "stop")
    fields = loads_object(text)
    assert (
        parsed.status == OK and fields is not None and parsed.better_answer == fields["better_answer"].strip()
    )


@SETTINGS
@given(data=st.data())
def test_the_trace_validator_accepts_what_its_grammar_admits(walker: Any, data: st.DataObject) -> None:
    text = walker(trace_form(200).lark(), data)
    check = validate_trace(text)
    assert check.valid, (check.reason, text)
    assert 1 <= check.n_reflections <= 2 and check.output


@SETTINGS
@given(data=st.data())
def test_the_reference_parser_reads_every_pair_the_grammar_admits(walker: Any, data: st.DataObject) -> None:
    text = walker(judge_form(64).lark(), data)
    scores = parse_score_pair(text)
    assert scores.ok, text
    assert all(s in range(1, 11) for s in scores.values)
    assert text.split("\n", 1)[1].strip()  # an explanation follows


@SETTINGS
@given(data=st.data())
def test_the_rating_parser_reads_every_rating_the_grammar_admits(walker: Any, data: st.DataObject) -> None:
    text = walker(judge_form(48, scores=1).lark(), data)
    rating = parse_rating(text)
    assert rating.ok and rating.values[0] in range(1, 11), text


@pytest.mark.parametrize("make", [instruction_form, response_form, trace_form, judge_form])
@pytest.mark.parametrize("max_tokens", [128, 320, 512, 4096])
def test_field_bounds_and_fixed_text_fit_the_budget(make: Any, max_tokens: int) -> None:
    form = make(max_tokens)
    bounds = form.field_tokens()
    repeats = (
        {"thinking": form.reflections + 1, "reflection": form.reflections} if form.kind == "trace" else {}
    )
    used = sum(n * repeats.get(name, 1) for name, n in bounds.items())
    fixed = len(form.fixed_text())  # a token is at least one character: this bounds the fixed part
    assert used + fixed // 2 < max_tokens
    assert min(bounds.values()) >= 1


def test_a_budget_too_small_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="max_tokens 24 is too small for the reflect_instruction form"):
        instruction_form(24).field_tokens()


@pytest.mark.parametrize("make", [instruction_form, response_form, trace_form])
def test_a_budget_too_small_for_a_form_falls_back_to_free_text_with_a_note(make: Any) -> None:
    small, enough = make(8), make(make(8).min_tokens())
    assert fitting_form(small) is None and fitting_form(enough) is enough
    note = form_note(small)
    assert note is not None and f"max_tokens 8 is too small for the {small.name} form" in note
    assert f"at least {small.min_tokens()}" in note and "free text" in note
    assert form_note(enough) is None and fitting_form(None) is None


@pytest.mark.parametrize("make", [instruction_form, response_form, trace_form])
def test_the_estimate_without_a_tokenizer_bounds_any_tokenizers_count(make: Any, bpe: Any) -> None:
    """A form judged to fit before the engine's tokenizer is known must fit in the engine too."""
    form = make(512)
    by_char = form.fixed_tokens(lambda text: len(text) + 1)  # a tokenizer that splits every character
    assert form.fixed_tokens() >= by_char >= form.fixed_tokens(bpe)
    assert make(form.min_tokens()).fits(bpe)


def test_json_schemas_name_every_field_and_bound_lengths() -> None:
    schema = instruction_form(320).json_schema()
    assert schema["required"] == ["critique", "new_instruction", "new_answer"]
    assert all(p["maxLength"] > 0 and p["minLength"] == 1 for p in schema["properties"].values())
    assert trace_form(512).json_schema()["required"] == ["thinking", "reflection", "after", "output"]


def test_a_json_trace_is_rendered_in_the_reflection_format() -> None:
    text = trace_from_json({"thinking": "2+2=5", "reflection": "No: 4.", "after": "So 4.", "output": "4"})
    assert text is not None
    check = validate_trace(text)
    assert check.valid and check.reflections == ("No: 4.",) and check.output == "4"
    assert trace_from_json({"thinking": "x"}) is None


@pytest.mark.parametrize(
    ("text", "finish", "status"),
    [
        ('{"critique": "c", "new_instruction": "i"}', "stop", "missing_new_answer"),
        ('{"critique": "c", "new_instruction": " ", "new_answer": "a"}', "stop", "empty:new_instruction"),
        ('{"critique": "c", "new_instruction": "i", "new_ans', "length", "truncated"),
        ('{"critique": "c", new_instruction}', "stop", "invalid_json"),
    ],
)
def test_json_replies_keep_the_rejection_reasons(text: str, finish: str, status: str) -> None:
    assert parse_instruction_reflection(text, finish).status == status


def test_a_field_cut_inside_an_escape_at_its_bound_still_parses() -> None:
    """llguidance ends a lexeme at its token bound whatever it holds: here after a lone backslash
    (a case hypothesis found through the grammar itself)."""
    cut = '{"critique": "' + "!" * 27 + '", "new_instruction": "Add\\", "new_answer": "0' + "!" * 44 + '\\"}'
    parsed = parse_instruction_reflection(cut, "stop")
    assert parsed.status == OK and parsed.new_instruction == "Add" and parsed.new_answer == "0" + "!" * 44
    # Escapes that are whole stay as they are; only a reply that is not JSON as it is gets repaired.
    whole = '{"critique": "c", "better_answer": "say \\"hi\\" \\\\"}'
    assert loads_object(whole) == {"critique": "c", "better_answer": 'say "hi" \\'}
    assert (
        parse_response_reflection('{"critique": "c", "better_answer": "x\\q"}', "stop").status
        == "invalid_json"
    )


def test_a_trace_output_starts_visible_so_a_cut_cannot_leave_it_blank() -> None:
    assert "/[^\\s<][^<]*/" in trace_form(512).lark()
