"""Which tokens of a (context, target) text are the target's, and what fits in ``max_length``.

Pure: the tokenizer comes in as a callable returning token ids and character offsets, so this is
tested in milliseconds and shared by every engine (docs/scoring.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

# (ids, offsets): offsets[i] = (start, end) character span of token i in the encoded text.
Encoding = tuple[Sequence[int], Sequence[tuple[int, int]]]
Encoder = Callable[[str], Encoding]

EMPTY_TARGET = "empty_target"
TRUNCATED_AWAY = "target_truncated_away"
NO_CONTEXT_TOKEN = "no_token_before_target"


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens a tokenizer adds around any text with its default settings.

    Llama 2 and 3 add a BOS in front (``prefix``); SmolLM2 declares ``<|im_start|>`` as its BOS but
    adds nothing; some tokenizers append an EOS (``suffix``). Scoring gives every text exactly
    these, as the reference's ``tokenizer.encode`` does (docs/scoring.md).
    """

    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()

    @classmethod
    def from_probe(cls, with_specials: Sequence[int], without: Sequence[int]) -> SpecialTokens:
        """Compare one text encoded with and without the tokenizer's special tokens."""
        with_specials, without = list(with_specials), list(without)
        n = len(without)
        for k in range(len(with_specials) - n + 1):
            if with_specials[k : k + n] == without:
                return cls(tuple(with_specials[:k]), tuple(with_specials[k + n :]))
        raise ValueError(
            "the tokenizer changes a text's own tokens when it adds special tokens; "
            f"{with_specials} does not contain {without}"
        )

    def apply(self, ids: Sequence[int], offsets: Sequence[tuple[int, int]]) -> Encoding:
        """``ids`` with the specials added, never doubled where the text already holds them."""
        ids, offsets = list(ids), list(offsets)
        p, s = list(self.prefix), list(self.suffix)
        if p and ids[: len(p)] != p:
            ids, offsets = p + ids, [(0, 0)] * len(p) + offsets
        if s and ids[len(ids) - len(s) :] != s:
            ids, offsets = ids + s, offsets + [(0, 0)] * len(s)
        return ids, offsets


@dataclass(frozen=True)
class TokenPlan:
    """The token ids to run and the positions whose next-token log-probs are the target's.

    ``input_ids[first_target:]`` are the scored target tokens, each predicted from the token before
    it, so ``first_target >= 1``. ``error`` is set (and nothing is scored) when no target token is
    left.
    """

    input_ids: tuple[int, ...]
    first_target: int
    n_context_tokens: int
    truncated: bool = False
    n_target_dropped: int = 0
    error: str | None = None

    @property
    def n_target(self) -> int:
        return 0 if self.error else len(self.input_ids) - self.first_target

    @property
    def target_ids(self) -> tuple[int, ...]:
        return () if self.error else self.input_ids[self.first_target :]


def plan_target(
    encode: Encoder,
    context: str,
    target: str,
    *,
    specials: SpecialTokens,
    max_length: int,
) -> TokenPlan:
    """Tokenise ``context + target`` once and locate the target by character offsets.

    ``encode`` gives the text's own tokens (no special tokens); ``specials`` are then added as the
    tokenizer itself adds them (a BOS where it adds one, never one that is only declared, never a
    doubled one). Why once: tokenising the prefix alone is off by one at the seam when the
    target's first token merges with the context's last character. A token belongs to the target
    when its character span overlaps the target's span. The first token of a text has nothing
    before it and is not scored: where no BOS is added, a direct text loses its first token, as in
    the reference. Over-long texts keep their first ``max_length`` tokens, as the reference cuts them
    (the target's end goes first); the plan says so.
    """
    if not target:
        return TokenPlan((), 0, 0, error=EMPTY_TARGET)
    seam = len(context)
    ids, offsets = specials.apply(*encode(context + target))
    target_idx = [i for i, (start, end) in enumerate(offsets) if end > start and end > seam]
    if not target_idx:
        return TokenPlan(tuple(ids), len(ids), len(ids), error=EMPTY_TARGET)
    first = target_idx[0]
    # Tokens after the first target token with an empty span (an appended EOS, rare specials) stay
    # in: the target is everything from its first token to the end of the text.
    n_context = first
    truncated = False
    n_target_dropped = 0
    if len(ids) > max_length:
        # As the reference scorer cuts (``tokenizer.encode(text, truncation=True, max_length=...)``):
        # the first max_length tokens stay, so a long target loses its end, and a context that fills
        # the window leaves no target token (NaN with a reason, never a score of 0).
        truncated = True
        n_target_dropped = len(ids) - max(max_length, first)
        ids = ids[:max_length]
        if first >= max_length:
            return TokenPlan(tuple(ids), len(ids), len(ids), True, n_target_dropped, TRUNCATED_AWAY)
    if first == 0:
        # Nothing precedes the first target token: it cannot be scored.
        if len(ids) <= 1:
            reason = TRUNCATED_AWAY if truncated else NO_CONTEXT_TOKEN
            return TokenPlan(tuple(ids), len(ids), 0, truncated, n_target_dropped + len(ids), reason)
        first = 1
        n_target_dropped += 1
    return TokenPlan(tuple(ids), first, n_context, truncated, n_target_dropped)
