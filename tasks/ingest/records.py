"""Canonical pairs from the shapes instruction data comes in; a reason for every row that is not one.

Accepted shapes: Alpaca (``instruction``, optional ``input``, ``output``), prompt/response
(``prompt``, ``response``), ShareGPT (``conversations``: ``from``/``value``, human/gpt/system) and
OpenAI ``messages`` (``role``/``content``, user/assistant/system). Every row keeps all its messages,
the system prompt included (``Pair.messages``); the pair itself is the last exchange: the last user
message and the answer that ends the conversation. A row that cannot be a conversation is rejected
with its reason, never trimmed: it starts with the assistant, has two turns of one side in a row, or
ends without an answer. Text is kept as given except that ``\\r\\n`` becomes ``\\n``, so the same
content in any file format gets the same id; a conversation's id covers every message, so two
conversations that end alike but differ before are two seeds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from tasks.conversation import History, Message, history_of, user_message

RAW_LIMIT = 2000
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}


@dataclass(frozen=True)
class Pair:
    """One (instruction, input, output) pair with a stable content-hash id."""

    id: str
    instruction: str
    input: str
    output: str
    source_line: int
    messages: tuple[Message, ...] = ()  # the whole conversation; () for a pair made alone

    @property
    def exchanges(self) -> int:
        """User turns answered: 1 for a single-turn pair."""
        return max(1, sum(1 for role, _ in self.messages if role == "assistant"))

    @property
    def user_message(self) -> str:
        """The instruction, with the input after a blank line when there is one (docs/scoring.md)."""
        return user_message(self.instruction, self.input)

    @property
    def history(self) -> History:
        """What comes before the pair's exchange: the system prompt and earlier turns (often none)."""
        return history_of(self.messages)


@dataclass(frozen=True)
class Reject:
    """A row that is not a pair: where it was and why."""

    line: int
    reason: str
    raw: str


def pair_id(instruction: str, input: str, output: str, context: tuple[Message, ...] = ()) -> str:
    """A content hash: of the pair, and of the conversation around it where there is more than the
    pair (a system prompt, earlier turns), so a single-turn pair keeps the id it always had."""
    parts: list[object] = [instruction, input, output]
    if context:
        parts.append([list(m) for m in context])
    blob = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def make_pair(
    instruction: str, input: str, output: str, line: int, messages: tuple[Message, ...] | None = None
) -> Pair:
    """A pair; ``messages``: the conversation it ends (by default the pair as one exchange)."""
    instruction, input, output = (_clean(t) for t in (instruction, input, output))
    alone = (("user", user_message(instruction, input)), ("assistant", output))
    convo = alone if messages is None else tuple((role, _clean(text)) for role, text in messages)
    context = () if convo == alone else convo
    return Pair(pair_id(instruction, input, output, context), instruction, input, output, line, convo)


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
        fields, messages = _fields(record)
    except _Bad as bad:
        return Reject(line, bad.reason, raw_text(record))
    for name, value in zip(("instruction", "input", "output"), fields, strict=True):
        if len(value) > max_chars:
            return Reject(line, f"too_long:{name}", raw_text(record))
    if messages and any(len(text) > max_chars for _, text in messages):
        return Reject(line, "too_long:messages", raw_text(record))
    return make_pair(*fields, line, messages)


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _fields(record: Mapping[str, Any]) -> tuple[tuple[str, str, str], tuple[Message, ...] | None]:
    """The pair's (instruction, input, output), and the conversation's messages (None: the pair alone)."""
    if "instruction" in record or "output" in record:
        pair = _text(record, "instruction"), _text(record, "input", optional=True), _text(record, "output")
        return pair, None
    if "prompt" in record or "response" in record:
        return (_text(record, "prompt"), "", _text(record, "response")), None
    if "conversations" in record:
        return _conversation(record, "conversations", "from", "value")
    if "messages" in record:
        return _conversation(record, "messages", "role", "content")
    raise _Bad("unknown_format")


def _text(record: Mapping[str, Any], name: str, *, optional: bool = False, where: str = "") -> str:
    value = record.get(name)
    if value is None:
        if optional:
            return ""
        raise _Bad(f"missing_field:{where}{name}")
    if not isinstance(value, str):
        raise _Bad(f"wrong_type:{where}{name}")
    if not optional and not value.strip():
        raise _Bad(f"empty_field:{where}{name}")
    return value


def _conversation(
    record: Mapping[str, Any], key: str, role_key: str, text_key: str
) -> tuple[tuple[str, str, str], tuple[Message, ...]]:
    """Every message of a conversation, checked: system prompts first, then user and assistant in
    turn, from a user turn to an answer. The pair is its last exchange."""
    turns = record[key]
    if not isinstance(turns, list) or not all(isinstance(t, Mapping) for t in turns):
        raise _Bad(f"wrong_type:{key}")
    messages: list[Message] = []
    for i, turn in enumerate(turns):
        role = turn.get(role_key)
        if not isinstance(role, str) or role not in ROLES:
            raise _Bad(f"unknown_role:{key}[{i}]")
        messages.append((ROLES[role], _text(turn, text_key, where=f"{key}[{i}].")))
    dialog = messages[next((i for i, (r, _) in enumerate(messages) if r != "system"), len(messages)) :]
    if not any(r == "user" for r, _ in dialog):
        raise _Bad(f"missing_field:{key}.user")
    if dialog[0][0] != "user":
        raise _Bad("starts_with_assistant")
    for (before, _), (role, _) in pairwise(dialog):
        if role == "system":
            raise _Bad("system_turn_inside")
        if role == before:
            raise _Bad(f"two_{role}_turns_in_a_row")
    if dialog[-1][0] != "assistant":
        raise _Bad("ends_without_answer")
    return (dialog[-2][1], "", dialog[-1][1]), tuple(messages)


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
