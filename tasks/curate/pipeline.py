"""Run the configured curation steps in order and keep every step's report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .base import Step, StepReport, as_table
from .columns import HISTORY, prompt_fields, response_field, with_history_text
from .config import CurationConfig
from .decontam import Benchmark, Decontaminate, NgramIndex
from .dedup import ExactDedup, NearDedup
from .filters import Bound, Flag, Where
from .top import Top


@dataclass(frozen=True)
class CurationResult:
    table: pa.Table
    reports: list[StepReport]
    rows_in: int
    skipped: list[str]  # configured steps that did not apply (e.g. a flag column the table lacks)

    @property
    def rows_out(self) -> int:
        return self.table.num_rows

    def report(self, name: str) -> StepReport:
        return next(r for r in self.reports if r.name == name)


RATING = "judge_rating"  # the judge's rating of a kept pair, joined onto selected rows by the export


def build_steps(
    config: CurationConfig, columns: Sequence[str], benchmarks: Sequence[Benchmark] = ()
) -> tuple[list[Step], list[str]]:
    """The steps for a table with ``columns``, and the configured ones that do not apply."""
    steps: list[Step] = []
    skipped: list[str] = []
    for column, rule in config.require.items():
        if column in columns:
            steps.append(Flag(column, allow_null=rule == "true_or_null"))
        else:
            skipped.append(f"require {column}: the table has no {column} column")
    steps.extend(Bound(b.column, b.op, b.value) for b in config.bounds)
    if config.min_rating is not None:
        if RATING not in columns:
            raise ValueError(
                f"min_rating {config.min_rating:g} needs the judge's ratings ({RATING}): export the "
                "selected pairs of a recycle run that had its judge stage (--judge)"
            )
        steps.append(Bound(RATING, ">=", config.min_rating))
    if config.where:
        steps.append(Where(config.where))
    prompt = tuple(prompt_fields(columns, config.prompt_fields))
    both = (*prompt, response_field(columns, config.response_field))
    if config.decontam.enabled:
        if benchmarks:
            index = NgramIndex.build(benchmarks, config.decontam.ngram, config.decontam.min_words)
            fields = prompt if config.decontam.on == "prompt" else both
            steps.append(Decontaminate(index, fields))
        else:
            skipped.append("decontamination: no benchmark files were given")
    if config.exact_dedup.enabled:
        steps.append(ExactDedup(prompt if config.exact_dedup.on == "prompt" else both))
    if config.near_dedup.enabled:
        nd = config.near_dedup
        fields = prompt if nd.on == "prompt" else both
        steps.append(NearDedup(fields, nd.threshold, nd.shingle_words, nd.num_perm, nd.seed))
    if config.top is not None:
        t = config.top
        steps.append(Top(t.by, t.k, t.fraction, t.group_by, t.largest))
    return steps, skipped


def curate(
    rows: pa.Table | Iterable[Mapping[str, Any]],
    config: CurationConfig,
    benchmarks: Sequence[Benchmark] = (),
) -> CurationResult:
    """The rows that pass every step. A conversation's history is part of its prompt: two conversations
    that end alike after different histories are not duplicates (``columns.with_history_text``)."""
    table = as_table(rows)
    derived = with_history_text(table)
    steps, skipped = build_steps(config, derived.column_names, benchmarks)
    reports = []
    current = derived
    for step in steps:
        current, report = step.apply(current)
        reports.append(report)
    if derived is not table:
        current = current.drop_columns([HISTORY])
    return CurationResult(current, reports, table.num_rows, skipped)
