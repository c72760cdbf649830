"""Output formats of an export: Alpaca columns, chat ``messages`` or ShareGPT ``conversations``, or
Reflection traces.

- ``alpaca``: ``instruction``, ``input``, ``output``. A trace row becomes (question, "", raw trace).
- ``messages``: one user turn (instruction, plus a blank line and the input when there is one,
  as in docs/scoring.md) and one assistant turn; where the table keeps a conversation
  (``messages``, as ``seeds`` does), its earlier messages (system prompt and turns) come first, so a
  conversation is written whole, ending with the row's own exchange.
- ``sharegpt``: the same conversation as ``conversations`` of ``from``/``value`` turns (``system``,
  ``human``, ``gpt``), the shape ShareGPT-style trainers read.
- ``traces``: the Reflection system prompt, the question, and the teacher's whole trace
  (``<thinking>``/``<reflection>``/``<output>``) as the assistant turn: what a model is trained on
  to answer in that format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyarrow as pa

from tasks.conversation import as_dicts, history_of, user_message

from .base import require_columns, row_label

Format = Literal["alpaca", "messages", "sharegpt", "traces"]
FORMATS: tuple[str, ...] = ("alpaca", "messages", "sharegpt", "traces")
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SHAREGPT_TURN = pa.struct([("from", pa.string()), ("value", pa.string())])
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def to_format(
    table: pa.Table,
    fmt: Format,
    *,
    system_prompt: str | None = None,
    extra_columns: Sequence[str] = (),
) -> pa.Table:
    """The rows in ``fmt``, plus ``extra_columns`` copied as they are (e.g. ``source_id``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    require_columns(table, extra_columns, "export columns")
    instructions, inputs, responses = _pairs(table, fmt)
    if fmt == "alpaca":
        out = pa.table(
            {
                "instruction": pa.array(instructions, pa.string()),
                "input": pa.array(inputs, pa.string()),
                "output": pa.array(responses, pa.string()),
            }
        )
    elif fmt in ("messages", "sharegpt"):
        stored = table.column("messages").to_pylist() if "messages" in table.column_names else []
        convs = [
            [
                *_history(stored[n] if stored else None),
                {"role": "user", "content": user_message(x, i)},
                {"role": "assistant", "content": y},
            ]
            for n, (x, i, y) in enumerate(zip(instructions, inputs, responses, strict=True))
        ]
        if fmt == "messages":
            out = pa.table({"messages": pa.array(convs, pa.list_(MESSAGE))})
        else:
            turns = [[{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in c] for c in convs]
            out = pa.table({"conversations": pa.array(turns, pa.list_(SHAREGPT_TURN))})
    else:
        if not system_prompt:
            raise ValueError("the traces format needs the Reflection system prompt")
        convs = [
            [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": user_message(x, i)},
                {"role": "assistant", "content": y},
            ]
            for x, i, y in zip(instructions, inputs, responses, strict=True)
        ]
        out = pa.table({"messages": pa.array(convs, pa.list_(MESSAGE))})
    for name in extra_columns:
        if name in out.column_names:
            raise ValueError(f"extra column {name!r} clashes with a {fmt} column")
        out = out.append_column(name, table.column(name))
    return out


def _history(messages: list[dict[str, str]] | None) -> list[dict[str, str]]:
    """A stored conversation's history: what comes before its last exchange, which the row's own
    columns give (the kept variant's)."""
    if not messages:
        return []
    return as_dicts(history_of([(m["role"], m["content"]) for m in messages]))


def _pairs(table: pa.Table, fmt: str) -> tuple[list[str], list[str], list[str]]:
    """(instruction, input, response) per row, from ``selected`` or ``traces`` columns."""
    cols = table.column_names
    if fmt == "traces" or ("question" in cols and "raw_text" in cols):
        require_columns(table, ["raw_text"], f"the {fmt} format")
        prompt_col = "question" if "question" in cols else "instruction"
        require_columns(table, [prompt_col], f"the {fmt} format")
        instr = table.column(prompt_col).to_pylist()
        inputs = table.column("input").to_pylist() if "input" in cols else [""] * table.num_rows
        resp = table.column("raw_text").to_pylist()
        names = (prompt_col, "raw_text")
    else:
        require_columns(table, ["instruction", "output"], f"the {fmt} format")
        instr = table.column("instruction").to_pylist()
        inputs = table.column("input").to_pylist() if "input" in cols else [""] * table.num_rows
        resp = table.column("output").to_pylist()
        names = ("instruction", "output")
    for i, (x, y) in enumerate(zip(instr, resp, strict=True)):
        for name, value in zip(names, (x, y), strict=True):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{row_label(table, i)}: empty {name}; cannot export it as {fmt}")
    return instr, ["" if v is None else str(v) for v in inputs], resp
