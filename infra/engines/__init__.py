"""Engines behind one interface (``base.Engine``), built from a spec string and options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .base import ChatRequest, Completion, Engine, EngineError, Sampling, ScoreRequest, TargetLogprobs
from .spec import EngineSpec, parse_spec
from .tokenizer import TextTokenizer

__all__ = [
    "ChatRequest",
    "Completion",
    "Engine",
    "EngineError",
    "EngineSpec",
    "Sampling",
    "ScoreRequest",
    "TargetLogprobs",
    "load_engine",
    "load_tokenizer",
    "parse_spec",
]


def load_engine(spec: str | EngineSpec, options: Mapping[str, Any] | None = None) -> Engine:
    """Build an engine from ``hf:...``, ``vllm:...`` or ``openai:MODEL@URL`` and its options."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    opts = dict(options or {})
    try:
        if parsed.kind == "hf":
            from infra.models import resolve_model

            from .hf_engine import HFEngine, HFOptions

            return HFEngine(resolve_model(parsed.model), HFOptions(**opts), spec=str(parsed))
        if parsed.kind == "vllm":
            from infra.models import resolve_model

            from .vllm_engine import VLLMEngine, VLLMOptions

            return VLLMEngine(resolve_model(parsed.model), VLLMOptions(**opts), spec=str(parsed))
        from .openai_engine import OpenAIEngine, OpenAIOptions

        return OpenAIEngine(parsed.model, parsed.base_url, OpenAIOptions(**opts), spec=str(parsed))
    except ValidationError as exc:
        raise EngineError(f"bad options for {parsed}: {exc}") from exc


def load_tokenizer(spec: str | EngineSpec, options: Mapping[str, Any] | None = None) -> TextTokenizer:
    """The engine's tokenizer and chat template without its weights (cheap, for the driver side)."""
    from infra.models import resolve_model

    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    opts = dict(options or {})
    source = opts.get("tokenizer") or parsed.model
    return TextTokenizer.load(
        resolve_model(str(source)), str(opts.get("chat_template", "model")), int(opts.get("max_length", 2048))
    )
