"""Where a record of a benchmark or test-set file keeps its prompt: one answer for the judge's test sets
(``tasks.judge.test_sets``) and for decontamination (``tasks.curate.decontam``), which read the same
files (``data/benchmarks``).

The reference's keys (Cherry_LLM ``eval.py``): Vicuna ``text``, Koala ``prompt``, Self-Instruct
``instruction`` (with ``instances[].input``), WizardLM ``Instruction``; answer files ``instruction`` or
``question``; LIMA a ``conversations`` list, chat data ``messages``, MT-Bench ``turns``, whose user
turns are the prompts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Fields that hold a prompt as text, in the order they are looked for.
PROMPT_KEYS = ("instruction", "text", "prompt", "Instruction", "question", "query")
# Fields that hold a conversation, whose user turns are prompts.
TURN_KEYS = ("conversations", "messages", "turns")
USER_ROLES = {"user", "human"}
LOOKED_FOR = ", ".join((*PROMPT_KEYS, *TURN_KEYS))


def prompt_field(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first text prompt of a record and its key, or None when it has none."""
    for key in PROMPT_KEYS:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return key, value
    return None


def user_turns(record: Mapping[str, Any]) -> list[str]:
    """The user turns of the record's first conversation field (empty when it has none)."""
    for key in TURN_KEYS:
        if key in record:
            return _user_turns(record[key])
    return []


def _user_turns(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if not isinstance(value, list) or not value:
        return []
    if all(isinstance(t, str) for t in value):
        # A plain list of turns alternates user / assistant, starting with the user.
        return [t for t in value[::2] if t.strip()]
    out = []
    for turn in value:
        if not isinstance(turn, Mapping):
            continue
        role = str(turn.get("role", turn.get("from", ""))).lower()
        content = turn.get("content", turn.get("value"))
        if role in USER_ROLES and isinstance(content, str) and content.strip():
            out.append(content)
    return out
