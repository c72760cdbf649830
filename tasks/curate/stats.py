"""Score summaries for the dataset card: quantiles and a small text histogram.

NaN and NULL scores are counted apart (an unscored row is not a score of 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
SCORE_COLUMNS = ("ifd_ppl", "rifd_ppl", "ifd_loss", "rifd_loss")


@dataclass(frozen=True)
class ScoreSummary:
    column: str
    count: int  # finite values
    missing: int  # NULL or NaN
    mean: float
    quantiles: dict[float, float]
    histogram: str

    @property
    def has_values(self) -> bool:
        return self.count > 0


def summarise(table: pa.Table, column: str, bins: int = 10, width: int = 30) -> ScoreSummary:
    values = [v for v in table.column(column).to_pylist()]
    finite = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    missing = len(values) - finite.size
    if finite.size == 0:
        return ScoreSummary(column, 0, missing, math.nan, {}, "(no values)")
    quantiles = {q: float(np.quantile(finite, q)) for q in QUANTILES}
    return ScoreSummary(
        column, int(finite.size), missing, float(finite.mean()), quantiles, histogram(finite, bins, width)
    )


def histogram(values: Sequence[float] | np.ndarray, bins: int = 10, width: int = 30) -> str:
    """One line per bin: ``[lo, hi)  count  bar``; the bar is scaled to the fullest bin."""
    arr = np.asarray(values, dtype=float)
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        return f"[{lo:.4g}, {hi:.4g}]  {arr.size:>6}  " + "#" * width
    counts, edges = np.histogram(arr, bins=bins, range=(lo, hi))
    top = int(counts.max())
    last = len(counts) - 1
    labels = [f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{']' if i == last else ')'}" for i in range(len(counts))]
    pad = max(len(x) for x in labels)
    return "\n".join(
        f"{label:<{pad}}  {int(c):>6}  {'#' * round(width * int(c) / top)}".rstrip()
        for label, c in zip(labels, counts, strict=True)
    )


def score_summaries(table: pa.Table, columns: Sequence[str] = SCORE_COLUMNS) -> list[ScoreSummary]:
    """Summaries of the score columns the table has (numeric ones only)."""
    out = []
    for name in columns:
        if name in table.column_names and pa.types.is_floating(table.schema.field(name).type):
            out.append(summarise(table, name))
    return out


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
              (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]  # fmt: skip
    for bound, label in bounds:
        if n < bound:
            return label
    return "n>1T"
