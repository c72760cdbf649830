"""A Hugging Face tokenizer seen through what scoring needs: offsets, BOS, chat prefix."""

from __future__ import annotations

from typing import Any

from tasks.scoring.templates import render_named
from tasks.scoring.tokens import Encoding, TokenPlan, plan_target

from .base import EngineError, ScoreRequest


class TextTokenizer:
    """Wraps a ``transformers`` fast tokenizer (loaded from a local path, never downloaded)."""

    def __init__(self, tokenizer: Any, chat_template: str = "model", max_length: int = 2048) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise EngineError("scoring needs a fast tokenizer (character offsets); this one is slow")
        self.tok = tokenizer
        self.chat_template = chat_template
        self.max_length = max_length
        if chat_template == "model" and not getattr(tokenizer, "chat_template", None):
            raise EngineError(
                "the model has no chat template: pass chat_template=vicuna|alpaca|llama-3 in its options"
            )

    @classmethod
    def load(cls, path: str, chat_template: str = "model", max_length: int = 2048) -> TextTokenizer:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except OSError as exc:
            raise EngineError(f"cannot load a tokenizer from {path!r}: {exc}") from exc
        return cls(tok, chat_template=chat_template, max_length=max_length)

    @property
    def bos_id(self) -> int | None:
        bos = self.tok.bos_token_id
        return int(bos) if bos is not None else None

    def encode(self, text: str) -> Encoding:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"]

    def chat_prefix(self, user_message: str) -> str:
        if self.chat_template != "model":
            return render_named(self.chat_template, user_message)
        out = self.tok.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )
        return str(out)

    def plan(self, request: ScoreRequest) -> TokenPlan:
        return plan_target(
            self.encode, request.context, request.target, bos_id=self.bos_id, max_length=self.max_length
        )
