"""The named prompt formats render the reference scorer's texts character for character.

The expected strings are written out here by hand from the reference's published prompt
dictionaries (tianyi-lab/Reflection_Tuning ``selection_code/data_analysis.py``).
"""

from __future__ import annotations

import pytest

from tasks.engine import ScoreRequest
from tasks.scoring.score import PairText, pair_requests
from tasks.scoring.templates import ChatFormat, check_template_name, prompt_format, render_named

REVERSED = (
    "Below is the response to an instruction, please guess the corresponding instruction for the "
    "given response.\nPAR\nGenerate the instruction for the above response."
)
VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. USER: "
)
ALPACA = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n"  # noqa: E501
ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n"
)

CASES = {
    # name: (IFD prefix without input, IFD prefix with input, r-IFD prefix)
    "vicuna": (
        VICUNA + "INS ASSISTANT:",
        VICUNA + "INS\nInput:\nINP ASSISTANT:",
        VICUNA + REVERSED + " ASSISTANT:",
    ),
    "alpaca": (
        ALPACA + "INS\n\n### Response:",
        ALPACA_INPUT + "INS\n\n### Input:\nINP\n\n### Response:",
        ALPACA + REVERSED + "\n\n### Response:",
    ),
    "wizardlm": ("INS\n\n### Response:", "INS\nINP\n\n### Response:", REVERSED + "\n\n### Response:"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_formats_are_the_reference_texts(name):
    no_input, with_input, reverse = CASES[name]
    fmt = prompt_format(name)
    plain = pair_requests(PairText("INS", "PAR"), fmt)
    assert plain.cond_response == ScoreRequest(no_input, "PAR")
    assert plain.cond_instruction == ScoreRequest(reverse, "INS")
    assert plain.direct_instruction == ScoreRequest("", "INS")
    with_inp = pair_requests(PairText("INS", "PAR", input="INP"), fmt)
    assert with_inp.cond_response == ScoreRequest(with_input, "PAR")
    # The reversed prompt is the no-input one, and the instruction and input are joined with nothing.
    assert with_inp.cond_instruction == ScoreRequest(reverse, "INSINP")
    assert with_inp.direct_instruction == ScoreRequest("", "INSINP")
    assert with_inp.direct_response == ScoreRequest("", "PAR")


def test_braces_in_the_text_are_kept_as_they_are():
    fmt = prompt_format("alpaca")
    text = fmt.prompt("Fill in {input} and {instruction}", "x {0}")
    assert "Fill in {input} and {instruction}" in text and "x {0}" in text


def test_wiz_is_the_reference_scripts_name_for_wizardlm():
    assert check_template_name("wiz") == "wizardlm"
    assert prompt_format("wiz") is prompt_format("wizardlm")


def test_the_default_is_the_models_template_with_the_input_after_a_blank_line():
    fmt = prompt_format("model", lambda m: f"<user>{m}<assistant>")
    assert isinstance(fmt, ChatFormat)
    reqs = pair_requests(PairText("INS", "PAR", input="INP"), fmt)
    assert reqs.cond_response == ScoreRequest("<user>INS\n\nINP<assistant>", "PAR")
    assert reqs.direct_instruction == ScoreRequest("", "INS\n\nINP")


def test_unknown_templates_name_the_known_ones():
    with pytest.raises(ValueError, match="vicuna, alpaca, wizardlm"):
        check_template_name("chatml")
    assert render_named("llama-3", "hi").startswith("<|begin_of_text|>")
