"""Input and output of ``reflectory score``: every input row comes out, scored or with its reason."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.conversation import answered_turns
from tasks.scoring.ifd import NAN, SCORE_COLUMNS, SCORING_VERSION, PairScore
from tasks.scoring.score import PairText

Turns = Literal["last", "each"]
TURN_SCORES = "turn_scores"  # the per-turn scores column of ``--turns each``


@dataclass(frozen=True)
class ScoringRow:
    """One input row: its original columns, and the pair to score or why there is none; with
    ``--turns each``, the earlier assistant turns of a conversation too (each after its history)."""

    line: int
    record: dict[str, Any]
    pair: PairText | None
    error: str | None
    earlier: tuple[PairText, ...] = ()

    @property
    def texts(self) -> list[PairText]:
        """What to score for this row: its earlier turns, then its own (last) exchange."""
        return [*self.earlier, self.pair] if self.pair is not None else []


def read_scoring_rows(source: str, turns: Turns = "last") -> list[ScoringRow]:
    """Read a file with the ingest readers; rows that do not normalise keep their reason.
    ``turns="each"`` also scores every earlier assistant turn of a conversation, as Deita does."""
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
            earlier = (
                tuple(PairText(q, a, "", h) for h, q, a in answered_turns(parsed.messages)[:-1])
                if turns == "each"
                else ()
            )
            rows.append(ScoringRow(line, dict(record), text, None, earlier))
        else:
            rows.append(ScoringRow(line, dict(record), None, parsed.reason))
    return rows


def write_scored(
    rows: Sequence[ScoringRow],
    scores: Sequence[PairScore],
    output: Path,
    *,
    student: str,
    turns: Turns = "last",
) -> int:
    """Write the input columns plus the score columns, one output row per input row, in input order.

    ``scores`` follow ``ScoringRow.texts`` row by row. The score columns are the row's own (last)
    exchange's; with ``turns="each"`` the ``turn_scores`` column lists every assistant turn's scores
    (``turn`` 1, 2, ...; the last is the row's own), empty for a row that was not scored."""
    it = iter(scores)
    out: list[dict[str, Any]] = []
    for row in rows:
        as_text = row.pair is None  # a rejected row may carry any type: keep it as text
        cols: dict[str, Any] = {
            k: _cell(v, as_text) for k, v in row.record.items() if k not in (*SCORE_COLUMNS, TURN_SCORES)
        }
        cols["source_line"] = row.line
        per_turn = [next(it).as_columns() for _ in row.texts]
        if turns == "each":
            cols[TURN_SCORES] = [{"turn": n, **s} for n, s in enumerate(per_turn, 1)]
        if row.pair is not None:
            cols.update(per_turn[-1])
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


def last_exchange_scores(rows: Sequence[ScoringRow], scores: Sequence[PairScore]) -> list[PairScore]:
    """Each scored row's own (last) exchange's scores, from ``scores`` in ``ScoringRow.texts`` order."""
    it = iter(scores)
    return [[next(it) for _ in row.texts][-1] for row in rows if row.texts]


def _cell(value: Any, as_text: bool) -> Any:
    """Nested values (ShareGPT turns) are kept as JSON text so mixed rows share one schema."""
    if isinstance(value, (list, dict)) or (as_text and value is not None and not isinstance(value, str)):
        return json.dumps(value, ensure_ascii=False)
    return value
