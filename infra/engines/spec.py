"""Engine specs: ``hf:PATH_OR_ID``, ``vllm:PATH_OR_ID``, ``openai:MODEL@BASE_URL``."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.engine import EngineError

KINDS = ("hf", "vllm", "openai")


@dataclass(frozen=True)
class EngineSpec:
    kind: str
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        tail = f"@{self.base_url}" if self.base_url else ""
        return f"{self.kind}:{self.model}{tail}"


def parse_spec(text: str | EngineSpec) -> EngineSpec:
    """Parse an engine spec (one already parsed is returned as is), raising EngineError with the
    accepted forms on a bad one."""
    if isinstance(text, EngineSpec):
        return text
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise EngineError(
            f"bad engine spec {text!r}: expected hf:PATH_OR_ID, vllm:PATH_OR_ID or openai:MODEL@BASE_URL"
        )
    if kind == "openai":
        model, at, url = rest.partition("@")
        if not model:
            raise EngineError(f"bad engine spec {text!r}: openai:MODEL@BASE_URL needs a model name")
        return EngineSpec(kind, model, url if at else None)
    return EngineSpec(kind, rest)


def parse_options(items: list[str] | None) -> dict[str, object]:
    """``["dtype=float32", "max_length=1024"]`` -> a dict; values are JSON when they parse as JSON."""
    import json

    options: dict[str, object] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise EngineError(f"bad engine option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options
