"""DuckDB over the store: every table a view over its current version, ``table@v3`` for time travel.

Views read the version's Parquet files with ``read_parquet`` (DuckDB 2.0 cannot install the delta
extension offline, and ``read_parquet`` over a version's file list is as fast as a glob and pushes
filters down; docs/store.md). Object stores are read through a pyarrow dataset instead,
since DuckDB's httpfs extension cannot be installed offline either.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from .schemas import TABLES, schema_of


class Tables(Protocol):
    """What SQL needs of a store: its tables by name and version (``storage.store.Store``)."""

    is_local: bool

    def delta(self, name: str, version: int | None = None, as_of: datetime | str | None = None) -> Any: ...


VERSIONED = re.compile(r"\b(" + "|".join(TABLES) + r")@v(\d+)\b")


def rewrite(query: str) -> tuple[str, set[tuple[str, int]]]:
    """``scores@v3`` -> ``scores__v3`` plus the (table, version) pairs the query needs."""
    wanted = {(m.group(1), int(m.group(2))) for m in VERSIONED.finditer(query)}
    return VERSIONED.sub(lambda m: f"{m.group(1)}__v{m.group(2)}", query), wanted


def connect(store: Tables, *, as_of: datetime | str | None = None) -> Session:
    return Session(store, as_of)


class Session:
    """A DuckDB connection whose views follow the store; ``sql`` adds versioned views on demand."""

    def __init__(self, store: Tables, as_of: datetime | str | None) -> None:
        self.store = store
        self.con = duckdb.connect()
        self._keep: list[Any] = []  # registered Arrow objects must outlive the views
        for name in TABLES:
            self._view(name, name, version=None, as_of=as_of)

    def _view(self, view: str, name: str, *, version: int | None, as_of: datetime | str | None) -> None:
        dt = self.store.delta(name, version, as_of)
        uris = dt.file_uris() if dt is not None else []
        if dt is not None and uris and self.store.is_local:
            # The file list is given to DuckDB as a value, never pasted into SQL text. union_by_name
            # reads every file's footer on every query: only pay it when the schema evolved, i.e.
            # when older files may lack newer columns.
            scan = self.con.read_parquet(uris, union_by_name=_schema_evolved(self.store, name, dt))
            scan.create_view(view, replace=True)
            return
        source: Any
        if dt is None:
            source = schema_of(name).empty_table()
        elif not uris:
            source = pa.schema(dt.schema()).empty_table()
        else:
            source = dt.to_pyarrow_dataset()
        self._keep.append(source)
        self.con.register(f"__arrow_{view}", source)
        self.con.execute(f'CREATE OR REPLACE VIEW "{view}" AS SELECT * FROM "__arrow_{view}"')

    def _prepare(self, query: str) -> str:
        text, wanted = rewrite(query)
        for name, version in wanted:
            self._view(f"{name}__v{version}", name, version=version, as_of=None)
        return text

    def sql(self, query: str, params: list[Any] | None = None) -> duckdb.DuckDBPyRelation:
        """A relation over the store; values go in ``params`` (``?`` placeholders)."""
        return self.con.sql(self._prepare(query), params=params)

    def execute(self, query: str, params: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
        return self.con.execute(self._prepare(query), params or [])


def _schema_evolved(store: Tables, name: str, dt: Any) -> bool:
    """Whether the table's schema changed since version 0 (its creation or first write)."""
    first = store.delta(name, version=0)
    return first is None or pa.schema(first.schema()) != pa.schema(dt.schema())
