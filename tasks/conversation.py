"""A conversation's messages, and the parts of it that the teacher and the student see (pure).

A message is ``(role, content)`` with the role ``system``, ``user`` or ``assistant``. A pair is a
conversation's last exchange; its **history** is every message before the last user message: the
system prompt and the earlier exchanges (docs/recycle.md, docs/scoring.md). A single-turn pair has
no history, so everything it is given is what it was given before conversations were kept whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

Message = tuple[str, str]  # (role, content)
History = tuple[Message, ...]


def user_message(instruction: str, input: str | None = "") -> str:
    """The user turn of an exchange: the instruction, then the input after a blank line when there is
    one. Scoring, the teacher, training and the export all write it this way (docs/scoring.md), so an
    exported row says exactly what its scores were computed on."""
    return f"{instruction}\n\n{input}" if input else instruction


class PairLike(Protocol):
    """A pair as the teacher, the scorer and the trainer see it: an exchange after its history."""

    @property
    def id(self) -> str: ...
    @property
    def instruction(self) -> str: ...
    @property
    def input(self) -> str: ...
    @property
    def output(self) -> str: ...
    @property
    def history(self) -> History: ...


def history_of(messages: Sequence[Message]) -> History:
    """The messages before the last user message (all of them when there is no user message)."""
    last_user = max((i for i, (role, _) in enumerate(messages) if role == "user"), default=len(messages))
    return tuple((role, content) for role, content in messages[:last_user])


def system_prompt(history: Sequence[Message]) -> str:
    """The history's system messages joined by a blank line ("" when it has none)."""
    return "\n\n".join(content for role, content in history if role == "system")


def exchanges(history: Sequence[Message]) -> list[tuple[str, str]]:
    """The history's (user, assistant) exchanges in order, system messages left out.

    Ingest guarantees the order (user and assistant in turn); a user message without its answer is a
    ValueError, since it could only be rendered by inventing one."""
    turns = [(role, content) for role, content in history if role != "system"]
    out: list[tuple[str, str]] = []
    for i in range(0, len(turns), 2):
        pair = turns[i : i + 2]
        if [role for role, _ in pair] != ["user", "assistant"]:
            raise ValueError(f"history turns {i} and {i + 1} are not a user message and its answer")
        out.append((pair[0][1], pair[1][1]))
    return out


def answered_turns(messages: Sequence[Message]) -> list[tuple[History, str, str]]:
    """Every assistant turn with what comes before it: (history, the user message it answers, the
    answer), in order; the last is the conversation's own last exchange. A turn that answers no user
    message is a ValueError (ingest rejects such rows)."""
    out: list[tuple[History, str, str]] = []
    for i, (role, answer) in enumerate(messages):
        if role != "assistant":
            continue
        if i == 0 or messages[i - 1][0] != "user":
            raise ValueError(f"message {i} answers no user message")
        out.append((tuple(messages[: i - 1]), messages[i - 1][1], answer))
    return out


def as_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Messages as chat APIs and chat templates take them."""
    return [{"role": role, "content": content} for role, content in messages]
