"""The forms a teacher's replies must take, as grammars every engine can enforce.

A small teacher drifts out of a bracket format and a large one wastes tokens on slips and on closing
markers cut off by the token limit. A form fixes the reply's shape and bounds each field in tokens,
so that a reply is complete within ``max_tokens``:

- reflection stages reply with one JSON object (``critique``, then the new instruction and answer,
  or the better answer), so any text fits in a field (brackets, code, newlines as ``\\n``);
- the traces flow replies in the Reflection format itself: ``<thinking>`` text with one or two
  ``<reflection>`` blocks inside, ``</thinking>``, then ``<output>``; nothing outside but a line
  break between the two, and no ``<`` inside a text (texts hold their own line breaks; a comparison
  is written in words);
- a judge replies in the reference protocol's own form (``scores``): a first line of whole scores
  from 1 to 10 separated by a space (two for a pair, one for a rating), then its explanation.

Each form is written three ways: a Lark grammar with per-field token bounds (llguidance: the ``hf``
engine's logits processor, vLLM's ``guidance`` structured outputs, ``vllm serve``), and a JSON
schema with per-field length bounds for OpenAI-style ``response_format`` (whose servers bound only
characters). A judge's form is a line of text, which a JSON schema cannot hold: an OpenAI-style
server without grammars gets the reference prompt alone, as the reference sent it. The parsers still
validate every reply: a form is never trusted blindly.

A field that reaches its token bound is ended there by llguidance whatever it holds (a cut, not a
match of its pattern): a JSON field may end in half an escape, which ``loads_object`` drops, and a
field may hold no letter; a trace output starts with a visible character, so it is never blank.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# A JSON string's body: any character but a quote, a backslash or a control character, or an
# escape; the first character is not blank and some character is a letter or digit, so a field is
# never empty or punctuation alone (which no student can score: "][" is one token).
_JSON_CHAR = r'[^"\\\x00-\x1f]|\\["\\bfnrt]'
_JSON_TEXT = rf'/([^"\\\x00-\x20]|\\["\\bfnrt])({_JSON_CHAR})*/ & /(.|\n)*\w(.|\n)*/'
# Trace text: anything but '<', which always begins the grammar's next tag. Lexemes match greedily
# (the longest match), so a text that may hold a '<' would swallow the '<' of '<reflection>' and
# leave the tag unwritable; the text never holds a tag the validator reads either.
_TRACE_TEXT = r"/[^<]*/"
# The output lexeme starts with its first visible character (a line break before it is the grammar's
# gap): a lexeme that reaches its token bound is ended there, whatever it holds, so an output lexeme
# that could open with blanks could end blank.
_TRACE_OUTPUT = r"/[^\s<][^<]*/"
# A lone backslash (after any escaped ones) right before a closing quote the grammar writes: the
# next field's separator, or the end of the object.
_CUT_ESCAPE = re.compile(r'(?<!\\)((?:\\\\)*)\\(?="(?:, "\w+": "|\}$))')
# Tokens kept free besides the fixed text and the fields (the end-of-sequence token and slack), and
# the fewest tokens a field may get.
_SLACK = 8
_MIN_FIELD_TOKENS = 4


@dataclass(frozen=True)
class FieldSpec:
    """One field of a form and its share of the reply's token budget."""

    name: str
    share: float
    description: str


@dataclass(frozen=True)
class ReplyForm:
    """The shape a reply must take, with token bounds per field derived from ``max_tokens``."""

    name: str
    kind: Literal["json", "trace", "scores"]
    fields: tuple[FieldSpec, ...]
    max_tokens: int
    reflections: int = 2  # traces: the most <reflection> blocks
    scores: int = 0  # judges: the scores on the first line

    @property
    def has_schema(self) -> bool:
        """Whether a JSON schema can carry the form (not a judge's line of scores)."""
        return self.kind != "scores"

    def fixed_tokens(self, count: Callable[[str], int] | None = None) -> int:
        """Tokens a reply spends outside its fields: counted with ``count`` (the engine's tokenizer),
        or bounded from above (a token per character of each piece, plus one for a word-start marker
        some tokenizers put in front), so that a form judged to fit always fits in the engine."""
        if count is None:
            return sum(len(piece) + 1 for piece in self.fixed_pieces())
        return sum(count(piece) for piece in self.fixed_pieces())

    def min_tokens(self, count: Callable[[str], int] | None = None) -> int:
        """The smallest ``max_tokens`` this form fits in: its fixed text, slack, 4 tokens per field."""
        return self.fixed_tokens(count) + _SLACK + _MIN_FIELD_TOKENS * len(self.fields)

    def fits(self, count: Callable[[str], int] | None = None) -> bool:
        """Whether a reply of this form can be complete within ``max_tokens``."""
        return self.max_tokens >= self.min_tokens(count)

    def field_tokens(self, count: Callable[[str], int] | None = None) -> dict[str, int]:
        """Each field's bound: the budget left after the fixed text, split by share (at least 1).

        ``count`` gives the tokens of a text with the engine's tokenizer, so the fixed text costs what
        it costs (a small vocabulary spends a token per character); without it, an upper bound.
        """
        if not self.fits(count):
            raise ValueError(
                f"max_tokens {self.max_tokens} is too small for the {self.name} form; give at least "
                f"{self.min_tokens(count)}"
            )
        free = self.max_tokens - self.fixed_tokens(count) - _SLACK
        total = sum(f.share for f in self.fields)
        out = {f.name: max(1, int(free * f.share / total)) for f in self.fields}
        if self.kind == "trace":  # repeated segments share their field's bound
            out["thinking"] = max(1, out["thinking"] // (self.reflections + 1))
            out["reflection"] = max(1, out["reflection"] // self.reflections)
        return out

    def fixed_pieces(self) -> list[str]:
        """The literal pieces of a reply, as the grammar writes them (at most, for traces)."""
        if self.kind == "json":
            names = [f'"{f.name}": "' for f in self.fields]
            return ["{" + names[0], *(f'", {n}' for n in names[1:]), '"}']
        if self.kind == "scores":
            return ["10"] * self.scores + [" "] * (self.scores - 1) + ["\n"]
        reflection = ["<reflection>", "</reflection>"] * self.reflections
        return ["<thinking>", *reflection, "</thinking>", "\n", "<output>", "\n", "</output>"]

    def fixed_text(self) -> str:
        """The characters every reply of this form contains besides its fields (at most)."""
        if self.kind == "json":
            return "{" + ", ".join(f'"{f.name}": ""' for f in self.fields) + "}"
        if self.kind == "scores":
            return " ".join(["10"] * self.scores) + "\n"
        return (
            "<thinking>" + "<reflection></reflection>" * self.reflections + "</thinking>\n<output>\n</output>"
        )

    def lark(self, count: Callable[[str], int] | None = None) -> str:
        """An llguidance grammar of the form, each field a lexeme bounded in tokens (``count``: as in
        ``field_tokens``)."""
        bounds = self.field_tokens(count)
        if self.kind == "json":
            parts = ' ", " '.join(f'"\\"{f.name}\\": \\"" {f.name} "\\""' for f in self.fields)
            rules = "\n".join(f"{f.name}[max_tokens={bounds[f.name]}]: {_JSON_TEXT}" for f in self.fields)
            return f'start: "{{" {parts} "}}"\n{rules}\n'
        if self.kind == "scores":
            scores = ' " " '.join(["score"] * self.scores)
            return (
                f'start: {scores} "\\n" explanation\n'
                "score: /10|[1-9]/\n"
                f"explanation[max_tokens={bounds['explanation']}]: /[^\\s](.|\\n)*/\n"
            )
        return (
            'start: "<thinking>" thinking ("<reflection>" reflection "</reflection>" thinking)'
            f'{{1,{self.reflections}}} "</thinking>" gap "<output>" gap output "</output>"\n'
            "gap[max_tokens=3]: /[ \\t]*\\n?[ \\t]*/\n"
            f"thinking[max_tokens={bounds['thinking']}]: {_TRACE_TEXT}\n"
            f"reflection[max_tokens={bounds['reflection']}]: {_TRACE_TEXT}\n"
            f"output[max_tokens={bounds['output']}]: {_TRACE_OUTPUT}\n"
        )

    def json_schema(
        self, chars_per_token: float = 3.0, count: Callable[[str], int] | None = None
    ) -> dict[str, Any]:
        """A JSON schema of the form for ``response_format``; lengths bounded in characters.

        Traces become ``thinking``, a ``reflection`` on it, the thinking ``after`` it and the
        ``output``, rendered back into the Reflection format by ``trace_from_json``.
        """
        if not self.has_schema:
            raise ValueError(f"the {self.name} form is a line of scores, which a JSON schema cannot hold")
        bounds = self.field_tokens(count)

        def text(name: str, description: str) -> dict[str, Any]:
            return {
                "type": "string",
                "minLength": 1,
                "maxLength": int(bounds[name] * chars_per_token),
                "description": description,
            }

        if self.kind == "json":
            props = {f.name: text(f.name, f.description) for f in self.fields}
        else:
            props = {
                "thinking": text("thinking", "step-by-step reasoning"),
                "reflection": text("reflection", "a check of the reasoning, correcting any mistake"),
                "after": text("thinking", "the reasoning after the correction"),
                "output": text("output", "the final answer only"),
            }
        return {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }


def instruction_form(max_tokens: int) -> ReplyForm:
    return ReplyForm(
        "reflect_instruction",
        "json",
        (
            FieldSpec("critique", 0.3, "the critique of the instruction and of its answer"),
            FieldSpec("new_instruction", 0.2, "the improved instruction, with any input it needs inside it"),
            FieldSpec("new_answer", 0.5, "a high-quality answer to the improved instruction"),
        ),
        max_tokens,
    )


def response_form(max_tokens: int) -> ReplyForm:
    return ReplyForm(
        "reflect_response",
        "json",
        (
            FieldSpec("critique", 0.3, "the critique of the answer"),
            FieldSpec("better_answer", 0.7, "the better answer to the same instruction"),
        ),
        max_tokens,
    )


def trace_form(max_tokens: int, reflections: int = 2) -> ReplyForm:
    return ReplyForm(
        "trace",
        "trace",
        (
            FieldSpec("thinking", 0.55, "reasoning"),
            FieldSpec("reflection", 0.25, "self-corrections"),
            FieldSpec("output", 0.2, "the final answer"),
        ),
        max_tokens,
        reflections,
    )


def trace_from_json(data: Any) -> str | None:
    """The Reflection-format text of a JSON trace reply (``json_schema`` of the trace form), or None."""
    keys = ("thinking", "reflection", "after", "output")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in keys):
        return None
    thinking, reflection, after, output = (data[k].strip() for k in keys)
    return (
        f"<thinking>\n{thinking}\n<reflection>\n{reflection}\n</reflection>\n{after}\n</thinking>\n"
        f"<output>\n{output}\n</output>"
    )


def loads_object(text: str) -> dict[str, Any] | None:
    """The JSON object a reply holds, or None when it is not one (then it is a free-text reply).

    A field that reached its token bound was ended there by the grammar, which may be inside an
    escape: a lone backslash right before the field's closing quote. Only when the reply is not
    valid JSON as it is, that half escape is dropped (``_CUT_ESCAPE``).
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    for candidate in (stripped, _CUT_ESCAPE.sub(r"\1", stripped)):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        return data if isinstance(data, dict) else None
    return None


def fitting_form(form: ReplyForm | None) -> ReplyForm | None:
    """The form, or None (free text) when ``max_tokens`` leaves no room for it.

    A budget too small for a form is the user's choice of budget, honoured: such replies are free
    text, parsed as with ``constrained: false`` (and most likely truncated). ``form_note`` says so.
    """
    return form if form is not None and form.fits() else None


def form_note(form: ReplyForm) -> str | None:
    """One line for the user when ``max_tokens`` is too small for the form, else None."""
    if form.fits():
        return None
    return (
        f"max_tokens {form.max_tokens} is too small for the {form.name} form (it needs at least "
        f"{form.min_tokens()}): those replies are free text, as with constrained: false"
    )


def judge_form(max_tokens: int, scores: int = 2) -> ReplyForm:
    """A judge's reply: ``scores`` whole scores from 1 to 10 on the first line, then its explanation
    (the reference protocol's form; ``scores=1`` is a single answer's rating)."""
    name = "judge_pair" if scores == 2 else "judge_rating"
    return ReplyForm(
        name, "scores", (FieldSpec("explanation", 1.0, "why the scores"),), max_tokens, scores=scores
    )
