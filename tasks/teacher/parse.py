"""Strict parsing of the teacher's reflection replies, in either form a teacher gives them.

- A JSON object (constrained replies, ``tasks.teacher.forms``): its fields, by name. The form is
  not trusted: a missing or empty field, or a reply that is not valid JSON, is rejected with the
  same reasons as free text (``truncated`` when the token limit cut it).
- Free text with bracket tags (``constrained: false``). Tolerated: a missing ``[End]`` at the very
  end of the reply, markdown bold/italics/headings around tags (``**[New Answer]**``,
  ``### [New Answer]``), a colon after a tag, extra whitespace, tags in another case, and a
  section closed by the next tag instead of ``[End]``.

Everything else is rejected with a reason, and a rejected reply never becomes a candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .forms import loads_object

OK = "ok"
EMPTY = "empty"
TRUNCATED = "truncated"
INVALID_JSON = "invalid_json"

_TAG = re.compile(
    r"\[\s*(new\s+instruction|new\s+answer|better\s+answer|end)\s*\][*_]*[ \t]*:?",
    re.IGNORECASE,
)
# Markdown around tags ends up at the edges of the neighbouring sections: emphasis markers, and a
# heading's hashes at the start of the tag's line.
_DECORATION = re.compile(r"^[\s*_]+|(?:(?:^|\n)[ \t]*#+[ \t]*|[\s*_])+$")


@dataclass(frozen=True)
class ParsedInstruction:
    new_instruction: str | None
    new_answer: str | None
    status: str

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class ParsedResponse:
    better_answer: str | None
    status: str

    @property
    def ok(self) -> bool:
        return self.status == OK


def _key(tag: str) -> str:
    return "_".join(tag.lower().split())


def _sections(text: str, finish_reason: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """Section contents by key, and problems by key (``duplicate``, ``unterminated``)."""
    tags = [(_key(m.group(1)), m.start(), m.end()) for m in _TAG.finditer(text)]
    found: dict[str, str] = {}
    problems: dict[str, str] = {}
    for i, (key, _, end) in enumerate(tags):
        if key == "end":
            continue
        if key in found or key in problems:
            problems[key] = "duplicate"
            continue
        if i + 1 < len(tags):
            found[key] = text[end : tags[i + 1][1]]
        else:
            # The last section ran to the end of the reply without [End].
            if finish_reason == "length":
                problems[key] = "unterminated"
            found[key] = text[end:]
    return {k: _DECORATION.sub("", v) for k, v in found.items()}, problems


def _extract_json(text: str, finish_reason: str | None, keys: tuple[str, ...]) -> tuple[dict[str, str], str]:
    data = loads_object(text)
    if data is None:
        return {}, TRUNCATED if finish_reason == "length" else INVALID_JSON
    for key in keys:
        if key not in data:
            return {}, f"missing_{key}"
        if not isinstance(data[key], str):
            return {}, f"not_text:{key}"
        if not data[key].strip():
            return {}, f"{EMPTY}:{key}"
    return {k: data[k].strip() for k in keys}, OK


def _extract(text: str, finish_reason: str | None, keys: tuple[str, ...]) -> tuple[dict[str, str], str]:
    if not text or not text.strip():
        return {}, TRUNCATED if finish_reason == "length" else EMPTY
    if text.lstrip().startswith("{") and (loads_object(text) is not None or not _TAG.search(text)):
        # A JSON reply (a bracket-tagged reply may also open with a brace: it is parsed as such).
        return _extract_json(text.strip(), finish_reason, keys)
    found, problems = _sections(text, finish_reason)
    for key in keys:
        if problems.get(key) == "duplicate":
            return {}, f"duplicate_tag:{key}"
        if key not in found:
            return {}, TRUNCATED if finish_reason == "length" else f"missing_{key}"
        if problems.get(key) == "unterminated":
            return {}, TRUNCATED
        if not found[key]:
            return {}, f"{EMPTY}:{key}"
    return {k: found[k] for k in keys}, OK


def parse_instruction_reflection(text: str, finish_reason: str | None = None) -> ParsedInstruction:
    """``[New Instruction] ... [End]`` and ``[New Answer] ... [End]`` from a reply."""
    parts, status = _extract(text, finish_reason, ("new_instruction", "new_answer"))
    return ParsedInstruction(parts.get("new_instruction"), parts.get("new_answer"), status)


def parse_response_reflection(text: str, finish_reason: str | None = None) -> ParsedResponse:
    """``[Better Answer] ... [End]`` from a reply."""
    parts, status = _extract(text, finish_reason, ("better_answer",))
    return ParsedResponse(parts.get("better_answer"), status)
