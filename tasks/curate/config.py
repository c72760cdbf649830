"""``CurationConfig``: every curation choice of an export, in one typed model.

The same model is the CLI's options, the Prefect form and what the dataset card records, so an
export can be reproduced from its card. Defaults: keep rows the selection kept (``kept``), valid
traces, traces that passed verification or had nothing to verify against; drop benchmark overlaps
(13-gram), exact duplicate prompts, and near duplicates (Jaccard >= 0.8 over 5-word shingles).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .filters import Op
from .formats import Format

Rule = Literal["true", "true_or_null"]
DEFAULT_REQUIRE: dict[str, Rule] = {"kept": "true", "valid": "true", "verified": "true_or_null"}


class BoundSpec(BaseModel):
    """``column op value``, e.g. ``ifd_ppl < 1``."""

    model_config = ConfigDict(extra="forbid")

    column: str
    op: Op
    value: float

    @classmethod
    def parse(cls, text: str) -> BoundSpec:
        """``"ifd_ppl<1"`` or ``"rifd_ppl >= 0.2"``."""
        for op in ("<=", ">=", "==", "!=", "<", ">"):
            if op in text:
                column, value = (p.strip() for p in text.split(op, 1))
                try:
                    return cls(column=column, op=op, value=float(value))
                except ValueError:
                    break
        raise ValueError(f"cannot read the bound {text!r}: expected COLUMN OP NUMBER, e.g. 'ifd_ppl<1'")


class TopSpec(BaseModel):
    """Keep the top ``k`` rows, or the top ``fraction`` of rows, by ``by`` (within ``group_by``)."""

    model_config = ConfigDict(extra="forbid")

    by: str = "ifd_ppl"
    k: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    group_by: str | None = None
    largest: bool = True

    @model_validator(mode="after")
    def _one_size(self) -> TopSpec:
        if (self.k is None) == (self.fraction is None):
            raise ValueError("top: give exactly one of k or fraction")
        return self

    @classmethod
    def parse(cls, text: str, **kwargs: object) -> TopSpec:
        """``"0.1"`` or ``"10%"`` is a fraction, ``"500"`` a count."""
        t = text.strip()
        try:
            if t.endswith("%"):
                return cls(fraction=float(t[:-1]) / 100, **kwargs)
            value = float(t)
        except ValueError:
            raise ValueError(f"cannot read --top {text!r}: expected a count (500), 0.1 or 10%") from None
        if value < 1:
            return cls(fraction=value, **kwargs)
        if value != int(value):
            raise ValueError(f"--top {text!r}: a count must be a whole number")
        return cls(k=int(value), **kwargs)


class ExactDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    on: Literal["prompt", "prompt_and_response"] = "prompt"


class NearDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity at or above which rows are near duplicates"
    )
    shingle_words: int = Field(5, ge=1)
    num_perm: int = Field(128, ge=16)
    seed: int = 1
    on: Literal["prompt", "prompt_and_response"] = "prompt_and_response"


class DecontamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    benchmarks_dir: str = Field("data/benchmarks", description="folder of benchmark JSONL files")
    ngram: int = Field(13, ge=1, description="word n-gram size")
    min_words: int = Field(8, ge=1, description="shorter prompts need an exact field match")
    on: Literal["prompt", "prompt_and_response"] = "prompt_and_response"


class CurationConfig(BaseModel):
    """All curation steps, applied in this order: flags, bounds, where, decontamination, exact
    dedup, near dedup, top."""

    model_config = ConfigDict(extra="forbid")

    require: dict[str, Rule] = Field(
        default_factory=lambda: dict(DEFAULT_REQUIRE),
        description="boolean columns that must be true (applied to the columns the table has)",
    )
    bounds: list[BoundSpec] = Field(default_factory=list)
    where: str | None = Field(None, description="an SQL boolean expression over the table's columns (DuckDB)")
    min_rating: float | None = Field(
        None,
        ge=1,
        le=10,
        description="keep pairs the judge rated at least this, 1-10 (a recycle run with its judge stage); "
        "a pair without a rating never passes",
    )
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    exact_dedup: ExactDedupConfig = Field(default_factory=ExactDedupConfig)
    near_dedup: NearDedupConfig = Field(default_factory=NearDedupConfig)
    top: TopSpec | None = None
    format: Format = "alpaca"
    prompt_fields: list[str] | None = Field(None, description="default: instruction+input, or question")
    response_field: str | None = Field(None, description="default: raw_text (traces) or output")
    extra_columns: list[str] = Field(default_factory=list, description="columns copied into the export")
