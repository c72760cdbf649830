"""Input and output of ``reflectory score``: every input row comes out, scored or with its reason."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.scoring.ifd import NAN, SCORE_COLUMNS, SCORING_VERSION, PairScore
from tasks.scoring.score import PairText


@dataclass(frozen=True)
class ScoringRow:
    """One input row: its original columns, and the pair to score or why there is none."""

    line: int
    record: dict[str, Any]
    pair: PairText | None
    error: str | None


def read_scoring_rows(source: str) -> list[ScoringRow]:
    """Read a file with the ingest readers; rows that do not normalise keep their reason."""
    from storage.sources import read_records
    from tasks.ingest.records import Pair, normalise

    rows: list[ScoringRow] = []
    for line, record, error, raw in read_records(source):
        if record is None:
            rows.append(ScoringRow(line, {"raw": raw}, None, error or "unreadable"))
            continue
        parsed = normalise(record, line)
        if isinstance(parsed, Pair):  # a conversation's last answer is scored after its history
            text = PairText(parsed.instruction, parsed.output, parsed.input, parsed.history)
            rows.append(ScoringRow(line, dict(record), text, None))
        else:
            rows.append(ScoringRow(line, dict(record), None, parsed.reason))
    return rows


def write_scored(
    rows: Sequence[ScoringRow], scores: Sequence[PairScore], output: Path, *, student: str
) -> int:
    """Write the input columns plus the score columns, one output row per input row, in input order."""
    it = iter(scores)
    out: list[dict[str, Any]] = []
    for row in rows:
        as_text = row.pair is None  # a rejected row may carry any type: keep it as text
        cols: dict[str, Any] = {k: _cell(v, as_text) for k, v in row.record.items() if k not in SCORE_COLUMNS}
        cols["source_line"] = row.line
        if row.pair is not None:
            cols.update(next(it).as_columns())
        else:
            cols.update({c: NAN for c in SCORE_COLUMNS})
            cols.update(
                n_response_tokens=0,
                n_instruction_tokens=0,
                truncated=False,
                score_error=row.error,
                scoring_version=SCORING_VERSION,
            )
        cols["student"] = student
        out.append(cols)
    output.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(out), output)
    return len(out)


def _cell(value: Any, as_text: bool) -> Any:
    """Nested values (ShareGPT turns) are kept as JSON text so mixed rows share one schema."""
    if isinstance(value, (list, dict)) or (as_text and value is not None and not isinstance(value, str)):
        return json.dumps(value, ensure_ascii=False)
    return value
