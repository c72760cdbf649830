"""Engines behind one interface (``tasks.engine.Engine``), built from a spec string and options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.engine import ChatRequest, Completion, Engine, EngineError, Sampling, ScoreRequest, TargetLogprobs

from .options import parse_engine_options
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
    "check_options",
    "load_engine",
    "load_tokenizer",
    "parse_spec",
]


def engine_to_run(
    spec: str | EngineSpec, options: Mapping[str, Any] | None = None
) -> tuple[EngineSpec, str | None]:
    """The engine that will run ``spec``, and a one-line note when it is not the one asked for.

    ``vllm:`` falls back to ``hf:`` (transformers) where vLLM is not installed, if the options are
    ones the hf engine takes too; otherwise it stays an error at load time.
    """
    from infra.platform import vllm_build

    parsed = parse_spec(spec)
    if parsed.kind != "vllm" or vllm_build() is not None:
        return parsed, None
    try:
        parse_engine_options("hf", str(parsed), dict(options or {}))
    except EngineError:
        return parsed, None
    fallback = EngineSpec("hf", parsed.model)
    return fallback, f"vLLM is not installed: {parsed} runs on the hf engine (transformers) as {fallback}"


def check_options(spec: str | EngineSpec, options: Mapping[str, Any] | None = None) -> Any:
    """The engine's parsed options, or an EngineError naming the bad ones (no model is loaded)."""
    parsed = parse_spec(spec)
    return parse_engine_options(parsed.kind, str(parsed), dict(options or {}))


def load_engine(
    spec: str | EngineSpec, options: Mapping[str, Any] | None = None, *, limiter: Any = None
) -> Engine:
    """Build an engine from ``hf:...``, ``vllm:...`` or ``openai:MODEL@URL`` and its options;
    ``limiter``: the rate limits an ``openai:`` engine shares with others (``infra.limiter``)."""
    parsed, note = engine_to_run(spec, options)
    if note:
        import logging

        logging.getLogger("reflectory").warning(note)
    opts = check_options(parsed, options)
    if parsed.kind == "hf":
        from infra.models import resolve_model

        from .hf_engine import HFEngine

        return HFEngine(resolve_model(parsed.model), opts, spec=str(parsed))
    if parsed.kind == "vllm":
        from .vllm_engine import VLLMEngine

        return VLLMEngine(parsed.model, opts, spec=str(parsed))
    from .openai_engine import OpenAIEngine

    return OpenAIEngine(parsed.model, parsed.base_url, opts, spec=str(parsed), limiter=limiter)


def load_tokenizer(spec: str | EngineSpec, options: Mapping[str, Any] | None = None) -> TextTokenizer:
    """The engine's tokenizer and chat template without its weights (cheap, for the driver side)."""
    from infra.models import resolve_model

    parsed = parse_spec(spec)
    opts = check_options(parsed, options)
    source = getattr(opts, "tokenizer", None) or parsed.model
    return TextTokenizer.load(
        resolve_model(str(source), files="tokenizer"), opts.chat_template, opts.max_length
    )
