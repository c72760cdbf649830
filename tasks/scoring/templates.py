"""Prompt formats: how a pair becomes the four texts that IFD and r-IFD score (docs/scoring.md).

Two families:

- **Reference formats** (``vicuna``, ``alpaca``, ``wizardlm``): the prompt texts of the reference
  scorer (tianyi-lab/Reflection_Tuning ``selection_code/data_analysis.py``, and Cherry_LLM's
  ``data_analysis.py``), character for character. No space or newline after ``ASSISTANT:`` /
  ``### Response:``, their own with-input prompts, the reversed prompt rendered through the
  no-input prompt, and the r-IFD target ``instruction + input`` joined with nothing between. With
  these texts and the tokenizer's own special tokens, Reflectory's losses equal the reference's.
- **Chat formats** (the model's own chat template, and ``llama-3``): the user message is the
  instruction, or ``instruction + "\\n\\n" + input``; it is wrapped in the template with the
  generation prompt, and the r-IFD target is that same user message.

A pair that ends a conversation is rendered after its **history** (``tasks.conversation``): a chat
format passes the system prompt and earlier turns to the template as messages; a reference format
writes its multi-turn form, the conversation's system prompt in place of its own preamble and each
earlier exchange as ``USER: ... ASSISTANT: answer</s>`` (FastChat's vicuna; alpaca and wizardlm the
same with their own turn text). An empty history renders exactly the single-turn texts.

Pure string formatting, so the seam between prefix and target is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tasks.conversation import History, Message, exchanges, system_prompt, user_message

REVERSE_PROMPT = (
    "Below is the response to an instruction, please guess the corresponding instruction for the "
    "given response.\n{response}\nGenerate the instruction for the above response."
)

MODEL_TEMPLATE = "model"


def reverse_prompt(response: str) -> str:
    """The user message of the reversed (r-IFD) pass: guess the instruction from the response."""
    return REVERSE_PROMPT.replace("{response}", response)


class PromptFormat(Protocol):
    """The texts of one pair's four passes: two prefixes and the r-IFD target."""

    @property
    def name(self) -> str: ...

    def prompt(self, instruction: str, input: str, history: History = ()) -> str:
        """The IFD prefix: the history, then the instruction (and input), up to where the response
        starts."""
        ...

    def reverse(self, response: str, history: History = ()) -> str:
        """The r-IFD prefix: the history, then the reversed prompt, up to where the instruction starts."""
        ...

    def instruction_target(self, instruction: str, input: str) -> str:
        """The r-IFD target (and its direct text)."""
        ...


@dataclass(frozen=True)
class ReferenceFormat:
    """A prompt format of the reference scorer, rendered exactly as it renders it, and its multi-turn
    form for a pair with a history."""

    name: str
    system: str  # the preamble; a conversation's own system prompt takes its place
    user: str  # the user's turn up to where the answer starts, with {instruction}
    with_input: str  # the whole single-turn prompt of a row with an input, {instruction} and {input}
    join: str = " "  # between the preamble and the first turn

    @property
    def no_input(self) -> str:
        """The whole single-turn prompt of a row without an input, with {instruction}."""
        return self._head(self.system) + self.user

    def prompt(self, instruction: str, input: str, history: History = ()) -> str:
        # format_map, as the reference does: braces inside the values are left alone.
        if history:
            return self._conversation(history, user_message(instruction, input))
        if input:
            return self.with_input.format_map({"instruction": instruction, "input": input})
        return self.no_input.format_map({"instruction": instruction})

    def reverse(self, response: str, history: History = ()) -> str:
        # The reference formats the reversed instruction with the no-input prompt, whatever the row.
        return self._conversation(history, reverse_prompt(response))

    def instruction_target(self, instruction: str, input: str) -> str:
        return instruction + input

    def render(self, message: str) -> str:
        """One user message as a prompt (teacher generation through a named template)."""
        return self.no_input.format_map({"instruction": message})

    def _head(self, system: str) -> str:
        return system + self.join if system else ""

    def _conversation(self, history: History, message: str) -> str:
        """The multi-turn form: preamble (or the history's system prompt), each earlier exchange
        closed by ``</s>``, then the last user turn up to the answer. No history: ``render``."""
        past = "".join(
            self.user.format_map({"instruction": question}) + " " + answer + "</s>"
            for question, answer in exchanges(history)
        )
        head = self._head(system_prompt(history) or self.system)
        return head + past + self.user.format_map({"instruction": message})


@dataclass(frozen=True)
class ChatFormat:
    """A chat template: ``render(messages)`` gives the template up to the assistant's turn."""

    name: str
    render: Callable[[Sequence[Message]], str]

    def prompt(self, instruction: str, input: str, history: History = ()) -> str:
        return self.render((*history, ("user", user_message(instruction, input))))

    def reverse(self, response: str, history: History = ()) -> str:
        return self.render((*history, ("user", reverse_prompt(response))))

    def instruction_target(self, instruction: str, input: str) -> str:
        return user_message(instruction, input)


_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)

REFERENCE_FORMATS: dict[str, ReferenceFormat] = {
    "vicuna": ReferenceFormat(
        "vicuna",
        system=_VICUNA_SYSTEM,
        user="USER: {instruction} ASSISTANT:",
        with_input=_VICUNA_SYSTEM + " USER: {instruction}\nInput:\n{input} ASSISTANT:",
    ),
    "alpaca": ReferenceFormat(
        "alpaca",
        system=(
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request."
        ),
        user="### Instruction:\n{instruction}\n\n### Response:",
        with_input=(
            "Below is an instruction that describes a task, paired with an input that provides further "
            "context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
        ),
        join="\n\n",
    ),
    "wizardlm": ReferenceFormat(
        "wizardlm",
        system="",
        user="{instruction}\n\n### Response:",
        with_input="{instruction}\n{input}\n\n### Response:",
        join="\n\n",
    ),
}
# The reference script's own name for the WizardLM format (``--prompt wiz``).
ALIASES = {"wiz": "wizardlm"}

_LLAMA3_TURN = "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
CHAT_TEMPLATES = ("llama-3",)


def _llama3(messages: Sequence[Message]) -> str:
    turns = "".join(_LLAMA3_TURN.format(role=role, content=content) for role, content in messages)
    return "<|begin_of_text|>" + turns + "<|start_header_id|>assistant<|end_header_id|>\n\n"


NAMED_TEMPLATES = (*REFERENCE_FORMATS, *ALIASES, *CHAT_TEMPLATES)


def check_template_name(name: str) -> str:
    """The canonical name of a template option; ValueError naming the known ones."""
    name = ALIASES.get(name, name)
    if name == MODEL_TEMPLATE or name in REFERENCE_FORMATS or name in CHAT_TEMPLATES:
        return name
    known = ", ".join([MODEL_TEMPLATE, *REFERENCE_FORMATS, *CHAT_TEMPLATES])
    raise ValueError(f"unknown chat template {name!r}; known: {known}")


def render_named(template: str, message: str) -> str:
    """One user message in a named template, up to the assistant's turn."""
    name = check_template_name(template)
    if name in REFERENCE_FORMATS:
        return REFERENCE_FORMATS[name].render(message)
    if name in CHAT_TEMPLATES:
        return _llama3((("user", message),))
    raise ValueError("the model's own template is rendered by its tokenizer, not by name")


def prompt_format(
    template: str, model_render: Callable[[Sequence[Message]], str] | None = None
) -> PromptFormat:
    """The format for a ``chat_template`` option; ``model_render`` renders the model's own template."""
    name = check_template_name(template)
    if name in REFERENCE_FORMATS:
        return REFERENCE_FORMATS[name]
    if name in CHAT_TEMPLATES:
        return ChatFormat(name, _llama3)
    if model_render is None:
        raise ValueError("the model's own chat template needs its tokenizer to render it")
    return ChatFormat(MODEL_TEMPLATE, model_render)
