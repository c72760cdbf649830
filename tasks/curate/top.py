"""Top-k or top-fraction of rows by a score, optionally within each group.

Cherry-style selection: keep the rows the student found hardest (largest IFD) among those that
passed the filters. A fraction keeps ``ceil(fraction * n)`` rows of each group, so no non-empty
group is emptied. Ties break by table order; rows without a score (NULL or NaN) cannot be ranked
and are removed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa

from .base import StepReport, keep_mask, require_columns


@dataclass(frozen=True)
class Top:
    by: str
    k: int | None = None
    fraction: float | None = None
    group_by: str | None = None
    largest: bool = True

    def __post_init__(self) -> None:
        if (self.k is None) == (self.fraction is None):
            raise ValueError("top: give exactly one of k or fraction")
        if self.k is not None and self.k < 1:
            raise ValueError(f"top: k must be at least 1, got {self.k}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"top: fraction must be in (0, 1], got {self.fraction}")

    @property
    def name(self) -> str:
        return "top"

    def describe(self) -> str:
        size = f"{self.k}" if self.k is not None else f"{self.fraction:.4g} (fraction)"
        order = "largest" if self.largest else "smallest"
        group = f" within each {self.group_by}" if self.group_by else ""
        return f"top {size} by {self.by} ({order} first){group}"

    def apply(self, table: pa.Table) -> tuple[pa.Table, StepReport]:
        require_columns(table, [self.by] + ([self.group_by] if self.group_by else []), self.name)
        scores = table.column(self.by).to_pylist()
        groups = table.column(self.group_by).to_pylist() if self.group_by else [None] * table.num_rows
        members: dict[object, list[int]] = defaultdict(list)
        unscored = 0
        for i, (score, group) in enumerate(zip(scores, groups, strict=True)):
            if score is None or (isinstance(score, float) and math.isnan(score)):
                unscored += 1
                continue
            members[group].append(i)
        keep = [False] * table.num_rows
        sign = -1.0 if self.largest else 1.0
        for rows in members.values():
            n = self.k if self.k is not None else math.ceil((self.fraction or 0) * len(rows))
            for i in sorted(rows, key=lambda i: (sign * float(scores[i]), i))[:n]:
                keep[i] = True
        kept = keep_mask(table, keep)
        details = {"by": self.by, "k": self.k, "fraction": self.fraction, "group_by": self.group_by,
                   "groups": len(members), "unscored": unscored}  # fmt: skip
        return kept, StepReport(
            self.name, table.num_rows - kept.num_rows, self.describe(), details, table.num_rows
        )
