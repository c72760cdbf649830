"""The one engine interface: two verbs, one request type each, one result type each.

Kept free of heavy imports (no torch, vllm, httpx) so pure stage logic in ``tasks/`` can use the
value types without pulling an inference stack in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tasks.scoring.templates import PromptFormat


@dataclass(frozen=True)
class ChatRequest:
    """One chat to complete: OpenAI-style messages (``{"role": ..., "content": ...}``)."""

    messages: tuple[dict[str, str], ...]

    @classmethod
    def user(cls, content: str, system: str | None = None) -> ChatRequest:
        msgs: list[dict[str, str]] = []
        if system:
            msgs.append({"role": "system", "content": system})
        msgs.append({"role": "user", "content": content})
        return cls(tuple(msgs))


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters shared by every engine (a subset all of them honour)."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    """What a generation returned, with the accounting a data factory needs."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``target`` given ``context``.

    ``context == ""`` is a *direct* pass: the target alone, after the tokenizer's BOS token when it
    has one. Otherwise ``context`` is already rendered text (a chat-template prefix) and the target
    follows it immediately, tokenised together (DESIGN.md section 3).
    """

    context: str
    target: str


@dataclass(frozen=True)
class TargetLogprobs:
    """Log-probabilities of each scored target token, or an error reason.

    ``logprobs`` is empty and ``error`` set when nothing could be scored. ``truncated`` tells that
    tokens were dropped from the left to fit ``max_length``; ``n_target_dropped`` counts target
    tokens among them.
    """

    logprobs: tuple[float, ...] = ()
    n_context_tokens: int = 0
    truncated: bool = False
    n_target_dropped: int = 0
    error: str | None = None
    token_ids: tuple[int, ...] = field(default=(), repr=False)


@runtime_checkable
class Generator(Protocol):
    """Generates chat completions (a teacher)."""

    spec: str

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]: ...


@runtime_checkable
class Scorer(Protocol):
    """Scores targets by their token log-probabilities (a student)."""

    spec: str

    @property
    def prompt_format(self) -> PromptFormat:
        """How a pair becomes the texts of its passes (the model's chat template or a named one)."""
        ...

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]: ...


class Engine(Generator, Scorer, Protocol):
    """An engine does both; ``close`` frees the model."""

    def close(self) -> None: ...


class EngineError(RuntimeError):
    """A clear, user-facing engine failure (bad spec, missing model, server without logprobs)."""
