"""The shape every curation step shares: a table in, the kept rows and a report out.

Like a datatrove block: one small class per step, each with its own statistics. Steps are pure
(no I/O): they work on in-memory Arrow tables, keep the surviving rows in their original order and
say how many rows they removed and why, so the dataset card can account for every row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import pyarrow as pa


@dataclass(frozen=True)
class StepReport:
    """What one step did: rows in, rows removed, the rule in words, and step-specific numbers."""

    name: str
    removed: int
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    rows_in: int = 0

    @property
    def rows_out(self) -> int:
        return self.rows_in - self.removed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows_out": self.rows_out}


class Step(Protocol):
    """A curation step: ``apply`` returns the kept rows (original order) and its report."""

    @property
    def name(self) -> str: ...

    def apply(self, table: pa.Table) -> tuple[pa.Table, StepReport]: ...


def as_table(rows: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    """Steps take Arrow tables; lists of dicts (tests, small callers) are converted once."""
    return rows if isinstance(rows, pa.Table) else pa.Table.from_pylist([dict(r) for r in rows])


def keep_mask(table: pa.Table, keep: list[bool]) -> pa.Table:
    return table.filter(pa.array(keep, pa.bool_()))


def require_columns(table: pa.Table, columns: Iterable[str], step: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{step}: the table has no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(table.column_names)})"
        )


def row_label(table: pa.Table, index: int) -> str:
    """How an error names a row: its ``source_id`` when the table has one, else its position."""
    if "source_id" in table.column_names:
        return f"row {index} (source_id {table.column('source_id')[index].as_py()!r})"
    return f"row {index}"
