"""Curation of a store table before export: filters, top-k, dedup, decontamination, formats.

Pure logic over in-memory Arrow tables (DuckDB evaluates SQL clauses in memory); no file or
network access. ``curate(table, CurationConfig(...), benchmarks)`` runs the steps and reports
what each removed; ``to_format`` shapes the rows for training.
"""

from .base import StepReport, as_table
from .config import BoundSpec, CurationConfig, DecontamConfig, ExactDedupConfig, NearDedupConfig, TopSpec
from .decontam import Benchmark, Decontaminate, NgramIndex, benchmark_texts
from .dedup import ExactDedup, NearDedup
from .filters import Bound, Flag, Where
from .formats import FORMATS, to_format
from .pipeline import CurationResult, build_steps, curate
from .stats import score_summaries, size_category, summarise
from .top import Top

__all__ = [
    "FORMATS",
    "Benchmark",
    "Bound",
    "BoundSpec",
    "CurationConfig",
    "CurationResult",
    "DecontamConfig",
    "Decontaminate",
    "ExactDedup",
    "ExactDedupConfig",
    "Flag",
    "NearDedup",
    "NearDedupConfig",
    "NgramIndex",
    "StepReport",
    "Top",
    "TopSpec",
    "Where",
    "as_table",
    "benchmark_texts",
    "build_steps",
    "curate",
    "score_summaries",
    "size_category",
    "summarise",
    "to_format",
]
