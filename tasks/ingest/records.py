"""Canonical pairs from the shapes instruction data comes in; a reason for every row that is not one.

Accepted shapes: Alpaca (``instruction``, optional ``input``, ``output``), prompt/response
(``prompt``, ``response``), ShareGPT (``conversations``: ``from``/``value``) and OpenAI
``messages`` (``role``/``content``). For conversations the first user turn and the assistant turn
right after it make the pair; a system message is not part of the pair. Text is kept as given
except that ``\\r\\n`` becomes ``\\n``, so the same content in any file format gets the same id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.scoring.templates import user_message

RAW_LIMIT = 2000


@dataclass(frozen=True)
class Pair:
    """One (instruction, input, output) pair with a stable content-hash id."""

    id: str
    instruction: str
    input: str
    output: str
    source_line: int

    @property
    def user_message(self) -> str:
        """The instruction, with the input after a blank line when there is one (docs/scoring.md)."""
        return user_message(self.instruction, self.input)


@dataclass(frozen=True)
class Reject:
    """A row that is not a pair: where it was and why."""

    line: int
    reason: str
    raw: str


def pair_id(instruction: str, input: str, output: str) -> str:
    blob = json.dumps([instruction, input, output], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def make_pair(instruction: str, input: str, output: str, line: int) -> Pair:
    instruction, input, output = (_clean(t) for t in (instruction, input, output))
    return Pair(pair_id(instruction, input, output), instruction, input, output, line)


def raw_text(record: Any) -> str:
    try:
        text = json.dumps(record, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(record)
    return text[:RAW_LIMIT]


def normalise(record: Any, line: int, *, max_chars: int = 100_000) -> Pair | Reject:
    """A Pair, or a Reject naming the reason (stable snake_case, e.g. ``missing_field:output``)."""
    if not isinstance(record, Mapping):
        return Reject(line, "not_an_object", raw_text(record))
    try:
        fields = _fields(record)
    except _Bad as bad:
        return Reject(line, bad.reason, raw_text(record))
    for name, value in zip(("instruction", "input", "output"), fields, strict=True):
        if len(value) > max_chars:
            return Reject(line, f"too_long:{name}", raw_text(record))
    return make_pair(*fields, line)


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _fields(record: Mapping[str, Any]) -> tuple[str, str, str]:
    if "instruction" in record or "output" in record:
        return _text(record, "instruction"), _text(record, "input", optional=True), _text(record, "output")
    if "prompt" in record or "response" in record:
        return _text(record, "prompt"), "", _text(record, "response")
    if "conversations" in record:
        return _conversation(
            record, "conversations", "from", "value", user=("human", "user"), bot=("gpt", "assistant")
        )
    if "messages" in record:
        return _conversation(record, "messages", "role", "content", user=("user",), bot=("assistant",))
    raise _Bad("unknown_format")


def _text(record: Mapping[str, Any], name: str, *, optional: bool = False) -> str:
    value = record.get(name)
    if value is None:
        if optional:
            return ""
        raise _Bad(f"missing_field:{name}")
    if not isinstance(value, str):
        raise _Bad(f"wrong_type:{name}")
    if not optional and not value.strip():
        raise _Bad(f"empty_field:{name}")
    return value


def _conversation(
    record: Mapping[str, Any],
    key: str,
    role_key: str,
    text_key: str,
    *,
    user: tuple[str, ...],
    bot: tuple[str, ...],
) -> tuple[str, str, str]:
    turns = record[key]
    if not isinstance(turns, list) or not all(isinstance(t, Mapping) for t in turns):
        raise _Bad(f"wrong_type:{key}")
    for i, turn in enumerate(turns):
        if turn.get(role_key) in user:
            question = _text(turn, text_key)
            if i + 1 < len(turns) and turns[i + 1].get(role_key) in bot:
                return question, "", _text(turns[i + 1], text_key)
            raise _Bad("no_assistant_turn")
    raise _Bad(f"missing_field:{key}.user")


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n")


@dataclass(frozen=True)
class Question:
    """A question: one to write a reflection trace for (with its gold answer when the source has one),
    or one of an evaluation test set (with the set's name and its position in the file, 0-based)."""

    id: str
    question: str
    answer: str | None = None
    source_line: int = 0
    test_set: str | None = None
    index: int = 0

    @classmethod
    def of_test_set(cls, test_set: str, index: int, question: str) -> Question:
        """A test set's question, named ``vicuna/3`` by its set and position."""
        return cls(f"{test_set}/{index}", question, test_set=test_set, index=index)


def normalise_question(record: Any, line: int, *, max_chars: int = 100_000) -> Question | Reject:
    """``question`` (or ``instruction``/``prompt``/``problem``) and optional ``answer``/``solution``."""
    if not isinstance(record, Mapping):
        return Reject(line, "not_an_object", raw_text(record))
    key = next((k for k in ("question", "problem", "instruction", "prompt") if k in record), None)
    if key is None:
        return Reject(line, "missing_field:question", raw_text(record))
    try:
        question = _clean(_text(record, key))
        answer_key = next((k for k in ("answer", "solution", "output") if record.get(k) is not None), None)
        answer = _clean(_text(record, answer_key, optional=True)) if answer_key else None
    except _Bad as bad:
        return Reject(line, bad.reason, raw_text(record))
    if len(question) > max_chars:
        return Reject(line, "too_long:question", raw_text(record))
    return Question(pair_id(question, "", answer or ""), question, answer or None, line)
