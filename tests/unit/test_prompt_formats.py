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
    fmt = prompt_format("model", lambda ms: "".join(f"<{r}>{c}" for r, c in ms) + "<assistant>")
    assert isinstance(fmt, ChatFormat)
    reqs = pair_requests(PairText("INS", "PAR", input="INP"), fmt)
    assert reqs.cond_response == ScoreRequest("<user>INS\n\nINP<assistant>", "PAR")
    assert reqs.direct_instruction == ScoreRequest("", "INS\n\nINP")


def test_unknown_templates_name_the_known_ones():
    with pytest.raises(ValueError, match="vicuna, alpaca, wizardlm"):
        check_template_name("chatml")
    assert render_named("llama-3", "hi") == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


# A conversation's last exchange, after a system prompt and one earlier exchange.
HISTORY = (("system", "SYS"), ("user", "Q1"), ("assistant", "A1"))
MULTI_TURN = {
    # name: (IFD prefix, r-IFD prefix) of PairText("INS", "PAR", history=HISTORY)
    "vicuna": ("SYS USER: Q1 ASSISTANT: A1</s>USER: INS ASSISTANT:",
               "SYS USER: Q1 ASSISTANT: A1</s>USER: " + REVERSED + " ASSISTANT:"),
    "alpaca": ("SYS\n\n### Instruction:\nQ1\n\n### Response: A1</s>### Instruction:\nINS\n\n### Response:",
               "SYS\n\n### Instruction:\nQ1\n\n### Response: A1</s>### Instruction:\n" + REVERSED
               + "\n\n### Response:"),
    "wizardlm": ("SYS\n\nQ1\n\n### Response: A1</s>INS\n\n### Response:",
                 "SYS\n\nQ1\n\n### Response: A1</s>" + REVERSED + "\n\n### Response:"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MULTI_TURN))
def test_reference_formats_write_their_multi_turn_form_after_a_history(name):
    prompt, reverse = MULTI_TURN[name]
    reqs = pair_requests(PairText("INS", "PAR", history=HISTORY), prompt_format(name))
    assert reqs.cond_response == ScoreRequest(prompt, "PAR")
    assert reqs.cond_instruction == ScoreRequest(reverse, "INS")
    # What is scored alone does not depend on the history.
    assert reqs.direct_response == ScoreRequest("", "PAR")
    assert reqs.direct_instruction == ScoreRequest("", "INS")


def test_a_history_without_a_system_prompt_keeps_the_formats_own_preamble():
    reqs = pair_requests(PairText("INS", "PAR", history=HISTORY[1:]), prompt_format("vicuna"))
    assert reqs.cond_response.context == VICUNA + "Q1 ASSISTANT: A1</s>USER: INS ASSISTANT:"
    # A system prompt alone (a single exchange after it) replaces the preamble and nothing else.
    only_system = pair_requests(PairText("INS", "PAR", history=HISTORY[:1]), prompt_format("vicuna"))
    assert only_system.cond_response.context == "SYS USER: INS ASSISTANT:"


def test_chat_formats_get_the_history_as_messages_before_the_last_user_turn():
    seen = []
    fmt = prompt_format("model", lambda ms: seen.append(tuple(ms)) or "<prompt>")
    pair_requests(PairText("INS", "PAR", input="INP", history=HISTORY), fmt)
    assert seen == [(*HISTORY, ("user", "INS\n\nINP")), (*HISTORY, ("user", REVERSED))]
    llama = pair_requests(PairText("INS", "PAR", history=HISTORY), prompt_format("llama-3"))
    assert llama.cond_response.context == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQ1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nINS<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    single = pair_requests(PairText("INS", "PAR"), prompt_format("llama-3"))
    assert single.cond_response.context == render_named("llama-3", "INS")
