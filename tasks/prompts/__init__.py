"""Versioned prompt templates (jinja2 files beside this module).

Each template has a version string stored on every row it produces; change the version whenever
the text changes, so results from different prompts are never mixed up (and Prefect caches key on it).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

# v2: the reflection prompts ask for a JSON object when the reply is constrained to that form.
PROMPT_VERSIONS: dict[str, str] = {
    "reflect_instruction": "reflect_instruction/v2",
    "reflect_response": "reflect_response/v2",
    "reflect_response_with_input": "reflect_response_with_input/v2",
    "trace_system": "trace_system/v1",
    "trace_user": "trace_user/v1",
    # The judge: Cherry_LLM's evaluation prompt (evaluation/generation/eval.py) word for word, and a
    # single-answer rating in the same words (AlpaGasus-style, on the pair protocol's 1-10 scale).
    "judge_system": "judge_system/v1",
    "judge_pair": "judge_pair/v1",
    "judge_rating": "judge_rating/v1",
}


@cache
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("tasks", "prompts"),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


@cache
def _template(name: str) -> Template:
    if name not in PROMPT_VERSIONS:
        raise KeyError(f"unknown prompt {name!r}; known: {', '.join(PROMPT_VERSIONS)}")
    return _env().get_template(f"{name}.jinja")


def render(name: str, *, verbatim: bool = False, **variables: Any) -> str:
    """The prompt text; a missing variable is an error, never an empty string.

    ``structured`` (default False) picks the reply format a reflection prompt asks for: a JSON
    object (constrained replies) or bracket tags (free text). ``history`` (default none) is the
    conversation before a pair, as ``(role, content)`` messages: a reflection prompt shows it before
    the pair and says the pair is its last exchange; without one the text is the single-turn text.
    ``verbatim`` keeps the text's edges as the template writes them (the judge's reference prompt
    ends in a blank line).
    """
    variables.setdefault("structured", False)
    variables.setdefault("history", ())
    text = _template(name).render(**variables)
    return text if verbatim else text.strip()


def version(name: str) -> str:
    return PROMPT_VERSIONS[name]
