"""Which columns hold the prompt and the response, for the store's two kinds of rows.

``selected`` rows are Alpaca pairs (``instruction``, ``input``, ``output``); ``traces`` rows have a
``question`` and the teacher's whole trace in ``raw_text`` (``output`` there is only the final
answer). Curation and formatting read the prompt and response through these names. A row that ends
a conversation (a ``messages`` column, as ``seeds`` keeps and the export joins onto ``selected``) has
its history as part of its prompt: ``history``, the text of the messages before its last exchange.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from tasks.conversation import history_of

HISTORY = "history"  # the derived text of a conversation's earlier messages ("" for a single turn)
PROMPT_CANDIDATES: tuple[tuple[str, ...], ...] = (("instruction", "input"), ("question",), ("prompt",))
RESPONSE_CANDIDATES: tuple[str, ...] = ("raw_text", "output", "response")


def prompt_fields(columns: Sequence[str], explicit: Sequence[str] | None = None) -> list[str]:
    if explicit:
        _check(columns, explicit, "prompt")
        return list(explicit)
    for group in PROMPT_CANDIDATES:
        if group[0] in columns:
            return [c for c in (*group, HISTORY) if c in columns]
    raise ValueError(
        f"no prompt column: expected one of instruction, question or prompt (columns: {', '.join(columns)})"
    )


def response_field(columns: Sequence[str], explicit: str | None = None) -> str:
    if explicit:
        _check(columns, [explicit], "response")
        return explicit
    for name in RESPONSE_CANDIDATES:
        if name in columns:
            return name
    raise ValueError(
        f"no response column: expected one of {', '.join(RESPONSE_CANDIDATES)} "
        f"(columns: {', '.join(columns)})"
    )


def _check(columns: Sequence[str], wanted: Sequence[str], role: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(
            f"{role} column {', '.join(missing)} not in the table (columns: {', '.join(columns)})"
        )


def with_history_text(table: pa.Table) -> pa.Table:
    """The table with ``history``, each row's earlier messages as one text (role, then content), when
    it keeps conversations (``messages``) and has no column of that name already."""
    if "messages" not in table.column_names or HISTORY in table.column_names:
        return table
    texts = [
        "\n\n".join(
            f"{role}: {content}" for role, content in history_of([(m["role"], m["content"]) for m in convo])
        )
        if convo
        else ""
        for convo in table.column("messages").to_pylist()
    ]
    return table.append_column(HISTORY, pa.array(texts, pa.string()))
