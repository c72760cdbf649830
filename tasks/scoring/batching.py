"""Length-sorted batches under a token budget, so padding stays a small share of the work."""

from __future__ import annotations

from collections.abc import Sequence


def length_batches(
    lengths: Sequence[int], *, max_tokens: int, max_pad_fraction: float = 0.0, max_batch: int = 64
) -> list[list[int]]:
    """Group indices of ``lengths`` (sorted by length) into batches.

    A batch's padded size (``len(batch) * longest``) stays within ``max_tokens``, its padding within
    ``max_pad_fraction`` of that size, and its count within ``max_batch``. A sequence longer than
    ``max_tokens`` goes alone. Why: on a CPU padding costs as much as real tokens, on a GPU the
    budget bounds activation memory.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        n = lengths[i]
        if current:
            longest = n  # sorted ascending: the newcomer is the longest
            size = (len(current) + 1) * longest
            pad = size - (total + n)
            if len(current) >= max_batch or size > max_tokens or pad > max_pad_fraction * size:
                batches.append(current)
                current, total = [], 0
        current.append(i)
        total += n
    if current:
        batches.append(current)
    return batches
