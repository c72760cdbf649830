"""Exact and near duplicate removal; the first row of each duplicate group is kept.

Exact: rows whose fields are equal after ``normalise`` (case, punctuation, spacing). The default
key is the prompt (instruction + input): one prompt with two answers teaches the student two
answers to one question, so the second is a duplicate even when its answer differs.

Near: MinHash LSH (datasketch) over word shingles of the whole example. LSH only proposes
candidates (tuned 0.1 below the threshold, for recall); a row is removed when the exact Jaccard
similarity of its shingle set with a kept row is at least the threshold, so MinHash estimation
error can only miss a pair, never remove a row that is not a near duplicate.
Everything is seeded: the same table gives the same rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .base import StepReport, keep_mask, require_columns
from .text import join_fields, normalise, shingles, words


@dataclass(frozen=True)
class ExactDedup:
    fields: tuple[str, ...]
    name: str = "exact dedup"

    def apply(self, table: pa.Table) -> tuple[pa.Table, StepReport]:
        require_columns(table, self.fields, self.name)
        columns = [table.column(f).to_pylist() for f in self.fields]
        first: dict[tuple[str, ...], int] = {}
        keep = []
        groups: set[tuple[str, ...]] = set()
        for i in range(table.num_rows):
            key = tuple(normalise("" if col[i] is None else str(col[i])) for col in columns)
            if key in first:
                keep.append(False)
                groups.add(key)
            else:
                first[key] = i
                keep.append(True)
        kept = keep_mask(table, keep)
        reason = f"same normalised {' + '.join(self.fields)} as an earlier row"
        details = {"fields": list(self.fields), "duplicate_groups": len(groups)}
        return kept, StepReport(self.name, table.num_rows - kept.num_rows, reason, details, table.num_rows)


@dataclass(frozen=True)
class NearDedup:
    fields: tuple[str, ...]
    threshold: float = 0.8
    shingle_words: int = 5
    num_perm: int = 128
    seed: int = 1
    name: str = "near dedup"

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"near dedup: threshold must be in (0, 1], got {self.threshold}")
        if self.shingle_words < 1:
            raise ValueError("near dedup: shingle_words must be at least 1")

    def apply(self, table: pa.Table) -> tuple[pa.Table, StepReport]:
        from datasketch import MinHash, MinHashLSH

        require_columns(table, self.fields, self.name)
        columns = [table.column(f).to_pylist() for f in self.fields]
        # LSH proposes pairs a little below the threshold (better recall at the threshold itself;
        # LSH cannot band for thresholds near 1); the exact Jaccard then decides.
        lsh = MinHashLSH(threshold=min(0.9, max(0.1, self.threshold - 0.1)), num_perm=self.num_perm)
        # One set of seeded permutations for all rows (building them per MinHash dominates otherwise).
        perms = MinHash(num_perm=self.num_perm, seed=self.seed, scheme="affine64").permutations
        kept_sets: dict[str, np.ndarray] = {}
        keep = []
        matched_to: dict[int, int] = {}
        for i in range(table.num_rows):
            hashes = _hashes(shingles(words(join_fields([c[i] for c in columns])), self.shingle_words))
            if hashes.size == 0:
                keep.append(True)  # nothing to compare (empty text); exact dedup covers these
                continue
            mh = MinHash(
                num_perm=self.num_perm,
                seed=self.seed,
                hashfunc=_identity,
                permutations=perms,
                scheme="affine64",
            )
            mh.update_batch(hashes.tolist())
            candidates = sorted(lsh.query(mh), key=int)
            twin = next(
                (int(k) for k in candidates if _jaccard(hashes, kept_sets[k]) >= self.threshold), None
            )
            if twin is None:
                lsh.insert(str(i), mh)
                kept_sets[str(i)] = hashes
                keep.append(True)
            else:
                matched_to[i] = twin
                keep.append(False)
        kept = keep_mask(table, keep)
        reason = (
            f"Jaccard similarity >= {self.threshold:g} with an earlier row "
            f"({self.shingle_words}-word shingles of {' + '.join(self.fields)})"
        )
        details = {
            "fields": list(self.fields),
            "threshold": self.threshold,
            "shingle_words": self.shingle_words,
            "num_perm": self.num_perm,
            "seed": self.seed,
            "clusters": len(set(matched_to.values())),
        }
        return kept, StepReport(self.name, table.num_rows - kept.num_rows, reason, details, table.num_rows)


def _identity(value: int) -> int:
    return value


def _hashes(items: set[str]) -> np.ndarray:
    """Sorted unique 64-bit hashes of the shingles (stable across processes, unlike ``hash``)."""
    out = np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in items),
        dtype=np.uint64,
        count=len(items),
    )
    return np.unique(out)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)
