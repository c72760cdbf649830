"""Row filters: an SQL ``WHERE`` clause, a bound on a score column, a required boolean flag.

The clause is evaluated by DuckDB over the in-memory Arrow table (no file access: external access
is disabled on the connection, so a clause cannot read files). Before evaluation every NaN in a
floating-point column becomes NULL: DuckDB orders NaN above every number, so ``ifd_ppl > 0.5``
would keep unscored rows, while an unscored row must never pass a score filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import duckdb
import pyarrow as pa

from .base import StepReport, keep_mask, require_columns

Op = Literal["<", "<=", ">", ">=", "==", "!="]
_SQL_OP = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "=", "!=": "<>"}
_ROW = "__reflectory_row"


def where_indices(table: pa.Table, clause: str) -> list[int]:
    """Positions of the rows for which ``clause`` is true (NaN treated as NULL)."""
    if _ROW in table.column_names:
        raise ValueError(f"the table may not have a column named {_ROW}")
    indexed = table.append_column(_ROW, pa.array(range(table.num_rows), pa.int64()))
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        con.register("rows_in", indexed)
        con.execute("SET lock_configuration = true")
        floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
        replace = ", ".join(f'CASE WHEN isnan("{c}") THEN NULL ELSE "{c}" END AS "{c}"' for c in floats)
        select = f"SELECT * REPLACE ({replace}) FROM rows_in" if floats else "SELECT * FROM rows_in"
        con.execute(f"CREATE VIEW t AS {select}")
        try:
            rows = con.execute(f"SELECT {_ROW} FROM t WHERE ({clause}) ORDER BY {_ROW}").fetchall()
        except duckdb.Error as exc:
            raise ValueError(f"bad WHERE clause {clause!r}: {exc}") from exc
    finally:
        con.close()
    return [r[0] for r in rows]


def _filter(table: pa.Table, indices: list[int]) -> pa.Table:
    wanted = set(indices)
    return keep_mask(table, [i in wanted for i in range(table.num_rows)])


@dataclass(frozen=True)
class Where:
    """Keep the rows an SQL boolean expression accepts (any column, any DuckDB function)."""

    clause: str
    name: str = "where"

    def apply(self, table: pa.Table) -> tuple[pa.Table, StepReport]:
        kept = _filter(table, where_indices(table, self.clause))
        return kept, StepReport(
            self.name, table.num_rows - kept.num_rows, f"WHERE {self.clause}", {}, table.num_rows
        )


@dataclass(frozen=True)
class Bound:
    """``column op value`` on a numeric column; rows with a missing or NaN value are removed."""

    column: str
    op: Op
    value: float

    @property
    def name(self) -> str:
        return f"bound {self.column} {self.op} {self.value:g}"

    def apply(self, table: pa.Table) -> tuple[pa.Table, StepReport]:
        require_columns(table, [self.column], self.name)
        kind = table.schema.field(self.column).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
            raise ValueError(f"{self.name}: {self.column} holds {kind}, not numbers")
        if not math.isfinite(self.value):
            raise ValueError(f"{self.name}: the bound must be a finite number")
        clause = f'"{self.column}" {_SQL_OP[self.op]} {self.value!r}'
        kept = _filter(table, where_indices(table, clause))
        missing = sum(1 for v in _floats(table, self.column) if v is None or math.isnan(v))
        details = {"column": self.column, "op": self.op, "value": self.value, "missing_or_nan": missing}
        reason = f"{self.column} {self.op} {self.value:g} (missing or NaN never passes)"
        return kept, StepReport(self.name, table.num_rows - kept.num_rows, reason, details, table.num_rows)


@dataclass(frozen=True)
class Flag:
    """A boolean column must be true; with ``allow_null`` a NULL (not checked) passes too.

    ``verified`` is NULL for a trace without a gold answer: nothing to check it against, so
    ``allow_null`` keeps it, while a trace that failed verification (False) is removed.
    """

    column: str
    allow_null: bool = False

    @property
    def name(self) -> str:
        return f"require {self.column}"

    def apply(self, table: pa.Table) -> tuple[pa.Table, StepReport]:
        require_columns(table, [self.column], self.name)
        values = table.column(self.column).to_pylist()
        keep = [v is True or (v is None and self.allow_null) for v in values]
        kept = keep_mask(table, keep)
        details = {
            "false": sum(v is False for v in values),
            "null": sum(v is None for v in values),
            "null_passes": self.allow_null,
        }
        reason = f"{self.column} is true" + (" or null (not checked)" if self.allow_null else "")
        return kept, StepReport(self.name, table.num_rows - kept.num_rows, reason, details, table.num_rows)


def _floats(table: pa.Table, column: str) -> list[float | None]:
    return [None if v is None else float(v) for v in table.column(column).to_pylist()]
