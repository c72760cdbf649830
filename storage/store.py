"""The store: Delta Lake tables under one URI, in delta-rs style verbs.

``Store("./factory").table("scores", version=3)``. Shard commits happen once: each carries a Delta
application transaction ``(run_id/stage/table/shard, version 1)`` in the same atomic commit as its
rows, so a retried task, a rerun after a crash, or a concurrent duplicate writer finds the shard
already committed and adds nothing. A committed shard is read back from its own files only: every
row carries its ``shard_key``, and the table's file statistics (kept for ``run_id`` and
``shard_key``) tell which files hold it. Commit conflicts between concurrent writers are retried
(``max_commit_retries``). deltalake panics in a process forked after use: spawn, never fork.

Reading a store that does not exist is an error that names it; only writers create one
(``Store(uri, create=True)``).
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from .schemas import TABLES, conform, schema_of

MAX_COMMIT_RETRIES = 100
WRITE_ATTEMPTS = 20
# An object store coming back from an outage answers 5xx (or refuses connections) for a while after
# its endpoint is up: the client's own retries span seconds, so a read of the log keeps trying longer.
READ_OUTAGE_S = 90.0
_TRANSIENT = ("500 Internal", "502 ", "503 ", "504 ", "Connection refused", "error sending request",
              "connection reset", "timed out", "SlowDown")  # fmt: skip
# Columns whose min/max statistics Delta keeps per file: what shard reads and run filters prune on.
# Compaction's target file size: large enough that a 52k-pair run's table is a file or two, small
# enough to rewrite quickly.
COMPACT_TARGET_BYTES = 256 * 1024 * 1024
# A checkpoint every 20 commits keeps each read of a table's log short (a run commits once per shard).
TABLE_CONFIG = {"delta.dataSkippingStatsColumns": "run_id,shard_key", "delta.checkpointInterval": "20"}


SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")


class StoreError(RuntimeError):
    """The store cannot be read or written (bad URI, no permission)."""


class Store:
    """Delta tables ``runs, seeds, rejects, reflections, scores, selected, traces`` under ``uri``."""

    def __init__(
        self, uri: str = "./factory", storage_options: dict[str, str] | None = None, *, create: bool = False
    ) -> None:
        self.uri = uri.rstrip("/")
        self.is_local = "://" not in self.uri or self.uri.startswith("file://")
        self.storage_options = (
            storage_options if storage_options is not None else _env_storage_options(self.uri)
        )
        if self.is_local:
            root = Path(self.uri.removeprefix("file://")).expanduser().resolve()
            if not root.is_dir():
                if not create:
                    raise StoreError(
                        f"no store at {root}: check --store, or create one with `reflectory ingest` or a run"
                    )
                try:
                    root.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create the store at {root}: {exc.strerror}") from exc
            if create and not os.access(root, os.W_OK):
                raise StoreError(f"the store at {root} is not writable")
            self.uri = str(root)
        elif not create and not any(self.exists(t) for t in TABLES):
            raise StoreError(f"no store at {self.uri}: no table of a store is there")

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def table_uri(self, name: str) -> str:
        schema_of(name)  # validates the name
        return f"{self.uri}/{name}"

    # -- reading ---------------------------------------------------------------------------------
    def delta(
        self, name: str, version: int | None = None, as_of: datetime | str | None = None
    ) -> DeltaTable | None:
        """The Delta table at a version or time, or None when it has never been written."""
        try:
            dt = self._open(name, version)
        except TableNotFoundError:
            return None
        if as_of is not None:
            dt.load_as_version(as_of)
        return dt

    def _open(self, name: str, version: int | None) -> DeltaTable:
        """The table's log read, retried through an object store's transient errors (``READ_OUTAGE_S``)."""
        from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

        transient = retry_if_exception(
            lambda e: (
                isinstance(e, OSError)
                and not isinstance(e, TableNotFoundError)
                and not self.is_local
                and any(t in str(e) for t in _TRANSIENT)
            )
        )
        for attempt in Retrying(
            retry=transient,
            wait=wait_random_exponential(multiplier=0.5, max=8),
            stop=stop_after_delay(READ_OUTAGE_S),
            reraise=True,
        ):
            with attempt:
                return DeltaTable(self.table_uri(name), version=version, storage_options=self.storage_options)
        raise AssertionError("unreachable")

    def exists(self, name: str) -> bool:
        return self.delta(name) is not None

    def table(
        self,
        name: str,
        version: int | None = None,
        as_of: datetime | str | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """All rows of a table version (an empty table with the schema when never written)."""
        dt = self.delta(name, version, as_of)
        if dt is None:
            empty = schema_of(name).empty_table()
            return empty.select(columns) if columns else empty
        return dt.to_pyarrow_table(columns=columns)

    def version(self, name: str) -> int | None:
        dt = self.delta(name)
        return None if dt is None else dt.version()

    def history(self, name: str) -> list[dict[str, Any]]:
        dt = self.delta(name)
        return [] if dt is None else list(dt.history())

    # -- writing ---------------------------------------------------------------------------------
    def append(self, name: str, rows: pa.Table | list[dict[str, Any]]) -> int:
        """Append rows (schemas merge, so new columns are added); returns the rows written."""
        table = conform(name, rows)
        self._write(name, table, CommitProperties(max_commit_retries=MAX_COMMIT_RETRIES))
        return table.num_rows

    def shard_committed(self, name: str, run_id: str, stage: str, shard: int) -> bool:
        return _committed(self.delta(name), _app_id(run_id, stage, name, shard))

    def read_shard(self, name: str, run_id: str, stage: str, shard: int) -> list[dict[str, Any]] | None:
        """A committed shard's rows (without ``shard_key``), read from the files that hold it only;
        None when the shard has not been committed. One read of the table's log."""
        key = _app_id(run_id, stage, name, shard)
        dt = self.delta(name)
        if dt is None or not _committed(dt, key):
            return None
        table = self._shard_table(dt, key)
        return table.drop_columns(["shard_key"]).to_pylist() if "shard_key" in table.column_names else []

    def shard_files(self, name: str, key: str) -> list[str]:
        """Files of the table that may hold rows of shard ``key``, by their statistics (all, without)."""
        dt = self.delta(name)
        return [] if dt is None else _files_with(dt, key)

    def _shard_table(self, dt: DeltaTable, key: str) -> pa.Table:
        wanted = set(_files_with(dt, key))
        dataset = dt.to_pyarrow_dataset()
        fragments = [f for f in dataset.get_fragments() if f.path in wanted]
        files = pads.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
        return files.to_table(filter=pc.field("shard_key") == key)

    def commit_shard(
        self, name: str, rows: pa.Table | list[dict[str, Any]], *, run_id: str, stage: str, shard: int
    ) -> bool:
        """Commit a shard's rows once; False when the shard was already committed (nothing written).

        The commit replaces any rows with the same ``shard_key`` (replace-where) and carries the
        shard's application transaction, atomically. The app transaction makes a later retry a
        no-op; the replace-where makes even two writers racing on the same shard (which delta-rs
        does not reject on the app transaction alone) leave exactly one copy.
        """
        app_id = _app_id(run_id, stage, name, shard)
        known = self.delta(name)  # one read of the log serves the check and the schema
        if _committed(known, app_id):
            return False
        table = conform(name, rows)
        keys = pa.array([app_id] * table.num_rows, pa.string())
        if "shard_key" in table.column_names:
            table = table.set_column(table.column_names.index("shard_key"), "shard_key", keys)
        else:
            table = table.append_column("shard_key", keys)
        props = CommitProperties(
            max_commit_retries=MAX_COMMIT_RETRIES, app_transactions=[Transaction(app_id=app_id, version=1)]
        )
        predicate = f"shard_key = '{app_id}'"  # delta-rs binds no values: the key is checked (_app_id)
        return self._write(
            name,
            table,
            props,
            predicate=predicate,
            already_done=lambda: self.shard_committed(name, run_id, stage, shard),
            known=known,
        )

    def _write(
        self,
        name: str,
        table: pa.Table,
        props: CommitProperties,
        *,
        predicate: str | None = None,
        already_done: Callable[[], bool] | None = None,
        known: DeltaTable | None = None,
    ) -> bool:
        """Append, retrying commits that lose a race on the table's metadata (creation, a new column).

        Returns False when ``already_done`` says another writer made this write unnecessary. ``known``
        is the table as just read, for the first attempt (each read of the log costs).
        """
        for attempt in range(WRITE_ATTEMPTS):
            try:
                current = known if attempt == 0 and known is not None else self.delta(name)
                if predicate is not None:
                    # A replace-where cannot merge schemas: add any new columns first.
                    self._ensure_columns(name, table.schema, current)
                elif current is None:
                    self._ensure_columns(name, schema_of(name), current)
                if predicate:
                    write_deltalake(
                        self.table_uri(name), table, mode="overwrite", predicate=predicate,
                        storage_options=self.storage_options, commit_properties=props,
                    )  # fmt: skip
                else:
                    write_deltalake(
                        self.table_uri(name), table, mode="append", schema_mode="merge",
                        storage_options=self.storage_options, commit_properties=props,
                    )  # fmt: skip
                return True
            except CommitFailedError:
                if already_done is not None and already_done():
                    return False
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.01, 0.2) * (attempt + 1))
            except OSError as exc:
                raise StoreError(f"cannot write {name} in {self.uri}: {exc}") from exc
        return True

    def _ensure_columns(self, name: str, schema: pa.Schema, current: DeltaTable | None) -> None:
        """Create the table, or add the columns it lacks (``current``: the table as last read);
        losing either race to another writer is fine."""
        try:
            if current is None:
                full = schema_of(name)
                for f in schema:
                    if f.name not in full.names:
                        full = full.append(f)
                DeltaTable.create(
                    self.table_uri(name), full, mode="ignore", storage_options=self.storage_options,
                    configuration=TABLE_CONFIG,
                )  # fmt: skip
            elif missing := [f for f in schema if f.name not in pa.schema(current.schema()).names]:
                empty = pa.schema(missing).empty_table()
                write_deltalake(
                    self.table_uri(name), empty, mode="append", schema_mode="merge",
                    storage_options=self.storage_options,
                )  # fmt: skip
        except (CommitFailedError, DeltaError):
            if not self.exists(name):
                raise

    # -- maintenance -----------------------------------------------------------------------------
    def compact(self, name: str) -> dict[str, Any]:
        """Rewrite the table's small files into files of up to 256 MB and write a checkpoint of its log:
        a new version, so ``table@vN`` still reads every earlier one until a vacuum removes their files.
        Returns delta-rs's metrics with the file counts before and after."""
        dt = self._require(name)
        before = len(dt.file_uris())
        metrics = dict(
            dt.optimize.compact(
                target_size=COMPACT_TARGET_BYTES,
                commit_properties=CommitProperties(max_commit_retries=MAX_COMMIT_RETRIES),
            )
        )
        dt = self._require(name)
        dt.create_checkpoint()  # readers load the log from here, not from every commit since creation
        return {**metrics, "files_before": before, "files_after": len(dt.file_uris())}

    def files(self, name: str) -> int:
        """Data files of the table's current version (0 when it was never written)."""
        dt = self.delta(name)
        return 0 if dt is None else len(dt.file_uris())

    def vacuum(
        self, name: str, retention_hours: int | None = None, *, force: bool = False, dry_run: bool = True
    ) -> list[str]:
        """Files no version newer than the retention needs; deleted only when ``dry_run`` is False.

        Below the table's default retention (7 days) delta-rs refuses unless ``force``: versions
        older than the retention can no longer be read (time travel to them breaks).
        """
        dt = self._require(name)
        return list(
            dt.vacuum(retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=not force)
        )

    def _require(self, name: str) -> DeltaTable:
        dt = self.delta(name)
        if dt is None:
            raise StoreError(f"table {name!r} has not been written in {self.uri}")
        return dt

    def tables(self) -> list[str]:
        return [t for t in TABLES if self.exists(t)]

    def sql(self, query: str, *, params: list[Any] | None = None, as_of: datetime | str | None = None) -> Any:
        """A DuckDB relation over every table (views), with ``table@v3`` time travel; values go in
        ``params`` (``?`` placeholders), never into the text."""
        from .sql import connect

        return connect(self, as_of=as_of).sql(query, params=params)


def _files_with(dt: DeltaTable, key: str) -> list[str]:
    """The table's files whose ``shard_key`` statistics admit ``key`` (every file where there are none)."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    if "min.shard_key" not in actions.column_names:
        return paths  # a table written before the statistics were kept: no pruning
    lows, highs = actions.column("min.shard_key").to_pylist(), actions.column("max.shard_key").to_pylist()
    return [
        p for p, lo, hi in zip(paths, lows, highs, strict=True) if lo is None or hi is None or lo <= key <= hi
    ]


def _committed(dt: DeltaTable | None, app_id: str) -> bool:
    """Whether the table (as read) holds the app transaction of a shard commit."""
    return dt is not None and dt.transaction_version(app_id) is not None


def _app_id(run_id: str, stage: str, name: str, shard: int) -> str:
    """A shard's key. Its parts come from an allow-list of characters (``SAFE_ID``): the key goes into
    a Delta predicate, whose API takes text only."""
    for what, value in (("run id", run_id), ("stage", stage), ("table", name)):
        if not SAFE_ID.fullmatch(value):
            raise StoreError(f"{what} {value!r} may hold only letters, digits and . _ : -")
    return f"reflectory/{run_id}/{stage}/{name}/{int(shard)}"


def _env_storage_options(uri: str) -> dict[str, str]:
    """S3 settings from the usual AWS environment variables (for s3:// URIs)."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    keys = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
        "AWS_S3_ALLOW_UNSAFE_RENAME",
        "AWS_CONDITIONAL_PUT",
    )
    opts = {k: os.environ[k] for k in keys if k in os.environ}
    if "AWS_REGION" not in opts and "AWS_DEFAULT_REGION" in opts:
        opts["AWS_REGION"] = opts["AWS_DEFAULT_REGION"]
    return opts
