"""A Hugging Face tokenizer seen through what scoring needs: offsets, its own special tokens, prompts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tasks.conversation import Message, as_dicts
from tasks.engine import EngineError, ScoreRequest, TargetLogprobs
from tasks.scoring.templates import (
    MODEL_TEMPLATE,
    PromptFormat,
    check_template_name,
    prompt_format,
    render_named,
)
from tasks.scoring.tokens import Encoding, SpecialTokens, TokenPlan, plan_target


class TextTokenizer:
    """Wraps a ``transformers`` fast tokenizer (loaded from a local path, never downloaded)."""

    def __init__(self, tokenizer: Any, chat_template: str = "model", max_length: int = 2048) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise EngineError("scoring needs a fast tokenizer (character offsets); this one is slow")
        self.tok = tokenizer
        if tokenizer.pad_token_id is None:
            # Padding is only ever masked or cut off, so EOS is a safe stand-in.
            tokenizer.pad_token = tokenizer.eos_token
        try:
            self.chat_template = check_template_name(chat_template)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        self.max_length = max_length
        if self.chat_template == MODEL_TEMPLATE and not getattr(tokenizer, "chat_template", None):
            raise EngineError(
                "the model has no chat template: pass chat_template=vicuna|alpaca|wizardlm|llama-3 "
                "in its options"
            )
        self.specials = _probe_specials(tokenizer)
        self.prompt_format: PromptFormat = prompt_format(self.chat_template, self.chat_prefix)

    @classmethod
    def load(cls, path: str, chat_template: str = "model", max_length: int = 2048) -> TextTokenizer:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except OSError as exc:
            raise EngineError(f"cannot load a tokenizer from {path!r}: {exc}") from exc
        return cls(tok, chat_template=chat_template, max_length=max_length)

    def encode(self, text: str) -> Encoding:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"]

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The conversation as text, ending with the assistant's generation prompt."""
        if self.chat_template != MODEL_TEMPLATE:
            # Named templates have one user slot: a system message goes in front of the user's.
            return render_named(self.chat_template, "\n\n".join(m["content"] for m in messages))
        return str(self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def chat_prefix(self, messages: Sequence[Message] | str) -> str:
        """The model's own template over ``messages`` (a history ending with a user message, or one
        user message), up to the assistant's turn."""
        return self.render_chat(as_dicts((("user", messages),) if isinstance(messages, str) else messages))

    def count(self, text: str) -> int:
        """Tokens of a text on its own (no special tokens): what a reply's fixed parts cost."""
        return len(self.encode(text)[0])

    def prompt_ids(self, text: str) -> list[int]:
        """A generation prompt's tokens: the text's own, after the prefix the tokenizer adds (a BOS)."""
        ids, offsets = self.encode(text)
        with_prefix, _ = SpecialTokens(self.specials.prefix).apply(ids, offsets)
        return list(with_prefix)

    def plan(self, request: ScoreRequest) -> TokenPlan:
        return plan_target(
            self.encode, request.context, request.target, specials=self.specials, max_length=self.max_length
        )


def _probe_specials(tokenizer: Any) -> SpecialTokens:
    """What the tokenizer adds by default, read off one text encoded with and without its specials."""
    probe = "Hello world"
    try:
        return SpecialTokens.from_probe(
            tokenizer(probe)["input_ids"], tokenizer(probe, add_special_tokens=False)["input_ids"]
        )
    except ValueError as exc:
        raise EngineError(f"cannot tell which special tokens this tokenizer adds: {exc}") from exc


def result_from_plan(plan: TokenPlan, logprobs: tuple[float, ...]) -> TargetLogprobs:
    """An engine's answer for one planned request (its error, if the plan has one, passes through)."""
    return TargetLogprobs(
        logprobs=logprobs,
        n_context_tokens=plan.n_context_tokens,
        truncated=plan.truncated,
        n_target_dropped=plan.n_target_dropped,
        error=plan.error,
        token_ids=plan.target_ids,
    )


def score_distinct(
    tokenizer: TextTokenizer,
    requests: Sequence[ScoreRequest],
    run: Callable[[list[TokenPlan]], Sequence[tuple[float, ...] | str]],
) -> list[TargetLogprobs]:
    """Plan each distinct request once, ``run`` the plannable ones (shortest first), map back in order.

    Every engine scores this way; only ``run`` (how log-probs are computed) differs. ``run`` gives a
    plan's log-probs, or the reason the engine refused that one plan (a string): its error.
    """
    unique = list(dict.fromkeys(requests))
    plans = [tokenizer.plan(r) for r in unique]
    runnable = sorted((i for i, p in enumerate(plans) if not p.error), key=lambda i: len(plans[i].input_ids))
    scored = dict(zip(runnable, run([plans[i] for i in runnable]), strict=True)) if runnable else {}
    by_request = {}
    for i, r in enumerate(unique):
        got = scored.get(i, ())
        if isinstance(got, str):
            by_request[r] = TargetLogprobs(n_context_tokens=plans[i].n_context_tokens, error=got)
        else:
            by_request[r] = result_from_plan(plans[i], got)
    return [by_request[r] for r in requests]
