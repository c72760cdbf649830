"""Grammar-constrained generation for the ``hf`` engine: llguidance as a transformers logits processor.

Each row of a batch with a form gets an ``LLMatcher`` over the form's Lark grammar; at every step
the matcher's token mask removes the tokens the grammar does not allow, and the sampled token is
fed back. A row whose grammar is complete may only end (EOS). Rows without a form are left alone,
so constrained and free-text requests share a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from tasks.engine import EngineError
from tasks.teacher.forms import ReplyForm


class GrammarConstraint:
    """Builds matchers for forms over one tokenizer (building the llguidance tokenizer takes ~1 s)."""

    def __init__(self, hf_tokenizer: Any, eos_ids: Sequence[int], count: Callable[[str], int]) -> None:
        try:
            import llguidance
            import llguidance.hf
        except ImportError as exc:  # a declared dependency; only a broken install lacks it
            raise EngineError("constrained generation needs llguidance: pip install llguidance") from exc
        self._llg = llguidance
        self.tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, eos_token=list(eos_ids))
        self.vocab_size = int(self.tokenizer.vocab_size)
        self.count = count
        self._grammars: dict[ReplyForm, str] = {}  # each form compiled and checked once

    def matcher(self, form: ReplyForm) -> Any:
        grammar = self._grammars.get(form)
        if grammar is None:
            grammar = str(self._llg.LLMatcher.grammar_from_lark(form.lark(self.count)))
            error = self._llg.LLMatcher.validate_grammar(grammar, self.tokenizer)
            if error:
                raise EngineError(f"the {form.name} form's grammar is invalid: {error}")
            self._grammars[form] = grammar
        return self._llg.LLMatcher(self.tokenizer, grammar, log_level=0)

    def processor(
        self, forms: Sequence[ReplyForm | None], prompt_length: int
    ) -> GrammarLogitsProcessor | None:
        """A logits processor for a batch (None when no row has a form)."""
        if all(f is None for f in forms):
            return None
        return GrammarLogitsProcessor(
            [self.matcher(f) if f else None for f in forms], self.vocab_size, prompt_length
        )


class GrammarLogitsProcessor:
    """transformers ``LogitsProcessor``: masks each constrained row's logits to its grammar."""

    def __init__(self, matchers: list[Any], vocab_size: int, prompt_length: int) -> None:
        from llguidance.torch import allocate_token_bitmask

        self.matchers = matchers
        self.vocab_size = vocab_size
        self.prompt_length = prompt_length
        self.bitmask = allocate_token_bitmask(len(matchers), vocab_size)
        self.bits = torch.arange(32, dtype=torch.int32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        from llguidance.torch import fill_next_token_bitmask

        step = input_ids.shape[1] - self.prompt_length
        rows = []
        for b, m in enumerate(self.matchers):
            if m is None:
                continue
            if step > 0 and not m.is_stopped():
                m.consume_token(int(input_ids[b, -1]))
            fill_next_token_bitmask(m, self.bitmask, b)
            rows.append(b)
        if rows:
            allowed = self._allowed(rows, scores.shape[1], scores.device)
            scores[rows] = scores[rows].masked_fill(~allowed, float("-inf"))
        return scores

    def _allowed(self, rows: list[int], width: int, device: torch.device) -> torch.Tensor:
        """Unpack the rows' 32-bit words into booleans, one per vocabulary entry of the logits."""
        words = self.bitmask[rows]
        bits = ((words.unsqueeze(-1) >> self.bits) & 1).reshape(len(rows), -1).bool()
        if bits.shape[1] < width:  # logits padded beyond the tokenizer's vocabulary: never allowed
            bits = torch.cat([bits, bits.new_zeros(len(rows), width - bits.shape[1])], dim=1)
        return bits[:, :width].to(device)

    def errors(self) -> list[str | None]:
        return [m.get_error() or None if m is not None else None for m in self.matchers]
