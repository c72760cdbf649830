"""N-gram decontamination against benchmark prompts (GPT-3 style word n-gram overlap).

A training row is contaminated when one of its fields shares a word 13-gram with a benchmark
prompt (after ``normalise``). Benchmark prompts shorter than 13 words are matched as a whole
phrase (all their words, in order) when they have at least ``min_words`` words (8, GPT-3's lower
bound), and by exact equality of a whole field when shorter: "Write a haiku." inside a longer
instruction is not evidence of contamination, the same 3-word prompt as the whole instruction is.
Per benchmark, the report counts the rows that overlapped and the benchmark items they hit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tasks.benchmark_records import prompt_field, user_turns

from .base import StepReport, keep_mask, require_columns
from .text import words


def benchmark_texts(record: Mapping[str, Any]) -> list[str]:
    """The prompt texts of one benchmark record (empty when it has none).

    The record's first text prompt (``tasks.benchmark_records``), else the user turns of its
    conversation, plus Self-Instruct's ``instances[].input``.
    """
    found = prompt_field(record)
    texts = [found[1]] if found else user_turns(record)
    for inst in record.get("instances") or []:
        if isinstance(inst, Mapping) and isinstance(inst.get("input"), str) and inst["input"].strip():
            texts.append(inst["input"])
    return texts


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark: ``items[j]`` holds the prompt texts of its record j."""

    name: str
    items: tuple[tuple[str, ...], ...]


@dataclass
class NgramIndex:
    """Word n-grams of every benchmark prompt, pointing back to (benchmark, item)."""

    n: int = 13
    min_words: int = 8
    grams: dict[tuple[str, ...], set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))
    exact: dict[str, set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))
    # The first ``anchor`` words of every gram -> the gram lengths starting with them: one short
    # tuple per position of a training text, and a full-length lookup only where one may match.
    anchors: dict[tuple[str, ...], set[int]] = field(default_factory=lambda: defaultdict(set))
    sizes: dict[str, int] = field(default_factory=dict)
    anchor: int = 3

    @classmethod
    def build(cls, benchmarks: Sequence[Benchmark], n: int = 13, min_words: int = 8) -> NgramIndex:
        if n < 1 or min_words < 1:
            raise ValueError("decontamination: n and min_words must be at least 1")
        index = cls(n=n, min_words=min(min_words, n))
        index.anchor = min(3, index.min_words)
        for bench in benchmarks:
            if bench.name in index.sizes:
                raise ValueError(f"two benchmarks are named {bench.name!r}")
            index.sizes[bench.name] = len(bench.items)
            for j, texts in enumerate(bench.items):
                for text in texts:
                    index._add(words(text), (bench.name, j))
        return index

    def _add(self, tokens: list[str], ref: tuple[str, int]) -> None:
        if len(tokens) >= self.n:
            for i in range(len(tokens) - self.n + 1):
                self.grams[tuple(tokens[i : i + self.n])].add(ref)
                self.anchors[tuple(tokens[i : i + self.anchor])].add(self.n)
        elif len(tokens) >= self.min_words:
            self.grams[tuple(tokens)].add(ref)
            self.anchors[tuple(tokens[: self.anchor])].add(len(tokens))
        elif tokens:
            self.exact[" ".join(tokens)].add(ref)

    def hits(self, text: str) -> set[tuple[str, int]]:
        """The (benchmark, item) pairs this text overlaps."""
        tokens = words(text)
        found: set[tuple[str, int]] = set(self.exact.get(" ".join(tokens), ()))
        a, n_tokens = self.anchor, len(tokens)
        for i in range(n_tokens - self.min_words + 1):
            sizes = self.anchors.get(tuple(tokens[i : i + a]))
            if not sizes:
                continue
            for size in sizes:
                if i + size <= n_tokens and (refs := self.grams.get(tuple(tokens[i : i + size]))):
                    found |= refs
        return found


@dataclass(frozen=True)
class Decontaminate:
    index: NgramIndex
    fields: tuple[str, ...]
    name: str = "decontamination"

    def apply(self, table: pa.Table) -> tuple[pa.Table, StepReport]:
        require_columns(table, self.fields, self.name)
        columns = [table.column(f).to_pylist() for f in self.fields]
        rows_per: dict[str, int] = defaultdict(int)
        items_per: dict[str, set[int]] = defaultdict(set)
        keep = []
        for i in range(table.num_rows):
            refs: set[tuple[str, int]] = set()
            for col in columns:
                if col[i]:
                    refs |= self.index.hits(str(col[i]))
            keep.append(not refs)
            for bench in {b for b, _ in refs}:
                rows_per[bench] += 1
            for bench, item in refs:
                items_per[bench].add(item)
        kept = keep_mask(table, keep)
        per_benchmark = {
            name: {"items": size, "rows_overlapping": rows_per[name], "items_hit": len(items_per[name])}
            for name, size in sorted(self.index.sizes.items())
        }
        reason = (
            f"shares a word {self.index.n}-gram with a benchmark prompt (prompts shorter than "
            f"{self.index.n} words: the whole prompt if >= {self.index.min_words} words, else an equal field)"
        )
        details = {
            "n": self.index.n,
            "min_words": self.index.min_words,
            "fields": list(self.fields),
            "benchmarks": per_benchmark,
        }
        return kept, StepReport(self.name, table.num_rows - kept.num_rows, reason, details, table.num_rows)
