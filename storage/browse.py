"""Read-only queries behind the data browser (``reflectory view``): runs, pairs, one pair, traces,
failures, each paged in the database so a store of a million rows opens as fast as one of eight.

Every value a user sends is a bound parameter (``?``); only names from fixed allow-lists (sort
columns, directions) ever reach the SQL text. Filters are validated by pydantic before any query,
so a bad value is a clear message (the web layer turns it into a 400), never a database error.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.conversation import as_dicts, history_of

from .runs import LATEST_RUNS, RunStatuses
from .store import Store

PAIR_SORTS = ("ifd", "rifd", "source_id", "reason", "variant")
TRACE_SORTS = ("ifd", "source_id", "reason", "n_reflections")


class Page(BaseModel):
    """Which rows of a listing: sorted by one allowed column, one page at a time."""

    model_config = ConfigDict(extra="forbid")

    order: Literal["asc", "desc"] = "desc"
    page: int = Field(1, ge=1, le=1_000_000)
    per_page: int = Field(50, ge=1, le=500)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


class PairFilter(Page):
    """Facets of the pairs listing; they compose, and the same query string drives page and JSON."""

    kept: bool | None = None
    reason: str | None = Field(None, max_length=200, description="the decision's reason, exactly")
    variant: Literal["ori", "Q", "A", "QA"] | None = None
    branch: Literal["original", "reflected"] | None = None
    parse_status: str | None = Field(None, max_length=200, description="any teacher reply of the pair")
    q: str | None = Field(None, max_length=500, description="words in the instruction, input or response")
    ifd_min: float | None = None
    ifd_max: float | None = None
    rifd_min: float | None = None
    rifd_max: float | None = None
    sort: Literal["ifd", "rifd", "source_id", "reason", "variant"] = "ifd"

    @field_validator("ifd_min", "ifd_max", "rifd_min", "rifd_max")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("reason", "parse_status", "q")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class TraceFilter(Page):
    valid: bool | None = None
    verified: bool | None = None
    kept: bool | None = None
    reason: str | None = Field(None, max_length=200)
    q: str | None = Field(None, max_length=500)
    sort: Literal["ifd", "source_id", "reason", "n_reflections"] = "ifd"

    @field_validator("reason", "q")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class UnknownRun(LookupError):
    """No such run in this store."""


@dataclass
class Listing:
    rows: list[dict[str, Any]]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "total": self.total,
            "page": self.page,
            "per_page": self.per_page,
            "pages": self.pages,
        }


def like(text: str) -> str:
    """A user's words as a LIKE pattern that matches them literally (``%`` and ``_`` escaped)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Browser:
    """The store seen by the browser. Thread-safe; the DuckDB views follow new commits (a run that is
    going shows its new shards) at most ``refresh_s`` after they land."""

    def __init__(self, store: Store, refresh_s: float = 2.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._session: Any = None
        self._at = 0.0
        self._statuses = RunStatuses(store)

    def _query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of one parameterised query. One at a time: the session's views of tables that have
        no files yet are Python objects registered on its connection, which a cursor would not see."""
        with self._lock:
            if self._session is None or time.monotonic() - self._at > self.refresh_s:
                from .sql import connect

                self._session = connect(self.store)
                self._at = time.monotonic()
            result = self._session.con.execute(sql, params or [])
            names = [d[0] for d in result.description]
            return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    # -- runs --------------------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """Every run: its flow, status, times, counts and cost (newest first). A run that says it is
        running is believed while its heartbeat is fresh, else it is ``crashed``; rows of a run that
        never recorded itself (an older version's run) show as ``unknown``."""
        done = self._query(
            "SELECT run_id, flow, status, cause, started_at, ended_at, counts_json, cost_json "
            f"FROM ({LATEST_RUNS}) AS runs ORDER BY started_at DESC"
        )
        out = self._statuses.apply([_run_row(r) for r in done])
        known = {r["run_id"] for r in out}
        seen = self._query(
            "SELECT run_id, count(*) AS n FROM (SELECT run_id FROM reflections UNION ALL "
            "SELECT run_id FROM trace_replies) GROUP BY run_id ORDER BY run_id DESC"
        )
        for r in seen:
            if r["run_id"] not in known:
                out.append({"run_id": r["run_id"], "flow": "", "status": "unknown", "counts": {}, "cost": {}})
        return out

    def run(self, run_id: str) -> dict[str, Any]:
        """One run, or UnknownRun: its latest runs row (with its live status), else what its rows say."""
        rows = self._query(
            "SELECT run_id, flow, status, cause, started_at, ended_at, counts_json, cost_json, config_json, "
            f"versions_json FROM ({LATEST_RUNS}) AS runs WHERE run_id = ?",
            [run_id],
        )
        if rows:
            out = _run_row(rows[0])
            out["status"] = self._statuses.of(run_id, out["status"])
            out["config"] = _loads(rows[0].get("config_json"))
            out["versions"] = _loads(rows[0].get("versions_json"))
            return out
        seen = self._query(
            "SELECT (SELECT count(*) FROM reflections WHERE run_id = ?) + "
            "(SELECT count(*) FROM selected WHERE run_id = ?) + (SELECT count(*) FROM trace_replies "
            "WHERE run_id = ?) AS n",
            [run_id, run_id, run_id],
        )
        if not seen or not seen[0]["n"]:
            raise UnknownRun(run_id)
        return {
            "run_id": run_id,
            "flow": "",
            "status": "unknown",
            "counts": {},
            "cost": {},
            "config": {},
            "versions": {},
        }

    def shards(self, run_id: str) -> int:
        """Shards of the run's final tables committed so far (what a live page watches)."""
        rows = self._query(
            "SELECT (SELECT count(DISTINCT shard) FROM selected WHERE run_id = ?) + "
            "(SELECT count(DISTINCT shard) FROM traces WHERE run_id = ?) AS n",
            [run_id, run_id],
        )
        return int(rows[0]["n"] or 0)

    # -- pairs -------------------------------------------------------------------------------------
    def pairs(self, run_id: str, f: PairFilter) -> Listing:
        """The pairs of a run, one row each, filtered, sorted and paged in the database; each with the
        original and reflected texts, the score of every variant and the teacher's critiques."""
        self.run(run_id)
        where: list[str] = ["s.run_id = ?"]
        params: list[Any] = [run_id]
        if f.kept is not None:
            where.append("s.kept = ?")
            params.append(f.kept)
        for column, value in (("s.reason", f.reason), ("s.variant", f.variant), ("s.branch", f.branch)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        for column, low, high in (
            ("s.ifd_ppl", f.ifd_min, f.ifd_max),
            ("s.rifd_ppl", f.rifd_min, f.rifd_max),
        ):
            if low is not None:
                where.append(f"{column} >= ?")
                params.append(low)
            if high is not None:
                where.append(f"{column} <= ?")
                params.append(high)
        if f.parse_status is not None:
            where.append(
                "s.source_id IN (SELECT source_id FROM reflections WHERE run_id = ? AND parse_status = ?)"
            )
            params += [run_id, f.parse_status]
        if f.q is not None:
            pattern = like(f.q)
            where.append(
                "(s.instruction ILIKE ? ESCAPE '\\' OR s.input ILIKE ? ESCAPE '\\' OR s.output ILIKE ? "
                "ESCAPE '\\' OR s.source_id IN (SELECT source_id FROM scores WHERE run_id = ? AND variant = "
                "'ori' AND (instruction ILIKE ? ESCAPE '\\' OR input ILIKE ? ESCAPE '\\' OR output ILIKE ? "
                "ESCAPE '\\')))"
            )
            params += [pattern, pattern, pattern, run_id, pattern, pattern, pattern]
        columns = {"ifd": "s.ifd_ppl", "rifd": "s.rifd_ppl", "source_id": "s.source_id", "reason": "s.reason",
                   "variant": "s.variant"}  # fmt: skip
        select = (
            "s.source_id, s.kept, s.variant, s.branch, s.reason, s.instruction, s.input, s.output, "
            "s.ifd_ppl, s.rifd_ppl, s.teacher, s.student, s.prompt_version, s.scoring_version, s.shard"
        )
        rows, total = self._page("selected s", select, where, params, columns[f.sort], "s.source_id", f)
        self._attach(run_id, rows)
        return Listing(rows, total, f.page, f.per_page)

    def _page(
        self,
        table: str,
        select: str,
        where: list[str],
        params: list[Any],
        column: str,
        tiebreak: str,
        f: Page,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of a filtered listing and the count of all it matches (``column`` and ``tiebreak``
        come from fixed allow-lists, never from the request)."""
        direction = "DESC" if f.order == "desc" else "ASC"
        clause = " AND ".join(where)
        total = self._query(f"SELECT count(*) AS n FROM {table} WHERE {clause}", params)[0]["n"]
        rows = self._query(
            f"SELECT {select} FROM {table} WHERE {clause} "
            f"ORDER BY {column} {direction} NULLS LAST, {tiebreak} LIMIT ? OFFSET ?",
            [*params, f.per_page, f.offset],
        )
        return rows, int(total)

    def _attach(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Each pair's variants (texts and scores) and teacher replies, fetched for this page only."""
        ids = [r["source_id"] for r in rows]
        if not ids:
            return
        marks = ", ".join("?" for _ in ids)
        scores = self._query(
            "SELECT source_id, variant, instruction, input, output, ifd_ppl, rifd_ppl, ifd_loss, rifd_loss, "
            f"score_error, truncated FROM scores WHERE run_id = ? AND source_id IN ({marks})",
            [run_id, *ids],
        )
        replies = self._query(
            "SELECT source_id, stage, parse_status, raw_text, new_instruction, new_answer, better_answer, "
            f"finish_reason, completion_tokens FROM reflections WHERE run_id = ? AND source_id IN ({marks}) "
            "ORDER BY stage",
            [run_id, *ids],
        )
        judged = self._query(
            f"SELECT {JUDGEMENT} FROM judgements WHERE run_id = ? AND source_id IN ({marks})", [run_id, *ids]
        )
        by_id = {r["source_id"]: r for r in rows}
        for r in rows:
            r["variants"], r["replies"], r["judgement"] = {}, [], None
        for j in judged:
            by_id[j.pop("source_id")]["judgement"] = _clean(j)
        for s in scores:
            by_id[s.pop("source_id")]["variants"][s.pop("variant")] = _clean(s)
        for t in replies:
            by_id[t.pop("source_id")]["replies"].append(t)
        for r in rows:
            _clean(r)
            original = r["variants"].get("ori", {})
            r["original"] = {
                k: original.get(k, r[k] if r["variant"] == "ori" else None)
                for k in ("instruction", "input", "output")
            }

    def pair(self, run_id: str, source_id: str) -> dict[str, Any] | None:
        """Everything about one pair in one run: the seed, every teacher reply, every score, the decision
        and its lineage; None when the run has no such pair."""
        run = self.run(run_id)
        seed = self._query(
            "SELECT * FROM seeds WHERE source_id = ? LIMIT 1",  # a store from before messages lacks them
            [source_id],
        )
        seed = [{k: row.get(k) for k in SEED_COLUMNS} for row in seed]
        messages = (seed[0].pop("messages") or []) if seed else []
        history = as_dicts(history_of([(m["role"], m["content"]) for m in messages]))
        selected = self._query(
            "SELECT * FROM selected WHERE run_id = ? AND source_id = ?", [run_id, source_id]
        )
        replies = self._query(
            "SELECT stage, teacher, prompt_version, parse_status, raw_text, new_instruction, new_answer, "
            "better_answer, prompt_tokens, completion_tokens, latency_s, finish_reason FROM reflections "
            "WHERE run_id = ? AND source_id = ? ORDER BY stage",
            [run_id, source_id],
        )
        scores = self._query(
            "SELECT * FROM scores WHERE run_id = ? AND source_id = ? "
            "ORDER BY CASE variant WHEN 'ori' THEN 0 WHEN 'Q' THEN 1 WHEN 'A' THEN 2 ELSE 3 END",
            [run_id, source_id],
        )
        traces = self._query("SELECT * FROM traces WHERE run_id = ? AND source_id = ?", [run_id, source_id])
        judged = self._query(
            "SELECT * FROM judgements WHERE run_id = ? AND source_id = ?", [run_id, source_id]
        )
        if not (selected or replies or scores or traces):
            return None
        decision = _clean(selected[0]) if selected else None
        return {
            "run_id": run_id,
            "source_id": source_id,
            "seed": _clean(seed[0]) if seed else None,
            "history": history,  # a conversation's messages before its last exchange (often none)
            "decision": decision,
            "replies": [_clean(r) for r in replies],
            "scores": [_clean(s) for s in scores],
            "traces": [_clean(t) for t in traces],
            "judgement": _clean(judged[0]) if judged else None,
            "lineage": {
                "run": run_id,
                "flow": run.get("flow"),
                "teacher": (decision or {}).get("teacher"),
                "student": (decision or {}).get("student"),
                "prompt_version": (decision or {}).get("prompt_version"),
                "scoring_version": (decision or {}).get("scoring_version"),
                "packages": (run.get("versions") or {}).get("packages"),
            },
        }

    # -- traces ------------------------------------------------------------------------------------
    def traces(self, run_id: str, f: TraceFilter) -> Listing:
        self.run(run_id)
        where: list[str] = ["run_id = ?"]
        params: list[Any] = [run_id]
        for column, value in (
            ("valid", f.valid),
            ("verified", f.verified),
            ("kept", f.kept),
            ("reason", f.reason),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.q is not None:
            pattern = like(f.q)
            where.append(
                "(question ILIKE ? ESCAPE '\\' OR output ILIKE ? ESCAPE '\\' OR thinking ILIKE ? ESCAPE '\\')"
            )
            params += [pattern, pattern, pattern]
        columns = {
            "ifd": "ifd_ppl",
            "source_id": "source_id",
            "reason": "reason",
            "n_reflections": "n_reflections",
        }
        select = (
            "source_id, question, gold, thinking, output, n_reflections, valid, invalid_reason, verified, "
            "ifd_ppl, kept, reason, teacher, student"
        )
        rows, total = self._page("traces", select, where, params, columns[f.sort], "source_id", f)
        return Listing([_clean(r) for r in rows], total, f.page, f.per_page)

    # -- failures ----------------------------------------------------------------------------------
    def failures(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Rows rejected at ingest, teacher replies that failed (with their reason), and texts the
        student could not score (with theirs)."""
        self.run(run_id)
        return {
            "rejects": [
                _clean(r)
                for r in self._query(
                    "SELECT source, line, reason, left(raw, 300) AS raw FROM rejects WHERE run_id = ? "
                    "ORDER BY line LIMIT 1000",
                    [run_id],
                )
            ],
            "replies": [
                _clean(r)
                for r in self._query(
                    "SELECT source_id, stage, parse_status, left(raw_text, 300) AS raw_text, finish_reason "
                    "FROM reflections WHERE run_id = ? AND parse_status <> 'ok' "
                    "ORDER BY parse_status, source_id LIMIT 1000",
                    [run_id],
                )
            ],
            "traces": [
                _clean(r)
                for r in self._query(
                    "SELECT source_id, invalid_reason, left(raw_text, 300) AS raw_text FROM trace_replies "
                    "WHERE run_id = ? AND NOT valid ORDER BY invalid_reason, source_id LIMIT 1000",
                    [run_id],
                )
            ],
            "unscored": [
                _clean(r)
                for r in self._query(
                    "SELECT source_id, variant, score_error FROM scores "
                    "WHERE run_id = ? AND score_error IS NOT NULL "
                    "ORDER BY source_id LIMIT 1000",
                    [run_id],
                )
            ],
        }

    # -- facets ------------------------------------------------------------------------------------
    def facets(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """The values each pair facet takes in the run, with counts (the filter form's choices)."""
        return {
            "reason": self._query(
                "SELECT reason AS value, count(*) AS n FROM selected WHERE run_id = ? "
                "GROUP BY ALL ORDER BY n DESC",
                [run_id],
            ),
            "variant": self._query(
                "SELECT variant AS value, count(*) AS n FROM selected WHERE run_id = ? "
                "GROUP BY ALL ORDER BY 1",
                [run_id],
            ),
            "parse_status": self._query(
                "SELECT parse_status AS value, count(*) AS n FROM reflections WHERE run_id = ? GROUP BY ALL "
                "ORDER BY n DESC LIMIT 50",
                [run_id],
            ),
        }

    def export_pairs(self, run_id: str, f: PairFilter, limit: int = 1_000_000) -> list[dict[str, Any]]:
        """Every pair the filter selects (all pages), flat, for a person to label."""
        rows: list[dict[str, Any]] = []
        page = 1
        while len(rows) < limit:
            listing = self.pairs(run_id, f.model_copy(update={"page": page, "per_page": 500}))
            for r in listing.rows:
                rows.append(
                    {
                        "run_id": run_id,
                        "source_id": r["source_id"],
                        "kept": r["kept"],
                        "variant": r["variant"],
                        "reason": r["reason"],
                        "instruction": r["instruction"],
                        "input": r["input"],
                        "output": r["output"],
                        "original_instruction": r["original"]["instruction"],
                        "original_input": r["original"]["input"],
                        "original_output": r["original"]["output"],
                        "ifd_ppl": r["ifd_ppl"],
                        "rifd_ppl": r["rifd_ppl"],
                        "label": None,
                    }
                )
            if page >= listing.pages:
                break
            page += 1
        return rows[:limit]


# What a listed pair shows of its judgement (the recycle flow's optional judge stage).
JUDGEMENT = (
    "source_id, outcome, failure, a_first_score_a, a_first_score_b, b_first_score_a, b_first_score_b, "
    "rating, rating_failure, kept_variant, judge"
)


SEED_COLUMNS = ("source_id", "instruction", "input", "output", "source", "source_line", "messages")


def _run_row(r: dict[str, Any]) -> dict[str, Any]:
    counts, cost = _loads(r.get("counts_json")), _loads(r.get("cost_json"))
    return {
        "run_id": r["run_id"],
        "flow": r.get("flow") or "",
        "status": r.get("status") or "",
        "cause": r.get("cause"),
        "started_at": _iso(r.get("started_at")),
        "ended_at": _iso(r.get("ended_at")),
        "counts": {
            k: counts.get(k)
            for k in ("pairs", "questions", "kept", "valid", "verified", "shards")
            if counts.get(k) is not None
        },
        "reasons": counts.get("reasons", {}),
        "failures": counts.get("failures", {}),
        "occupancy": counts.get("occupancy", {}),
        "report": counts.get("report"),
        "cost": {k: cost.get(k) for k in ("total", "device_hours", "currency")} if cost else {},
    }


def _loads(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value is not None else None)


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe values in place: NaN and infinities become None, times ISO strings."""
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            row[k] = None
        elif hasattr(v, "isoformat"):
            row[k] = v.isoformat()
    return row
