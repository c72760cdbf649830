"""Validation of reflection traces: one ``<thinking>`` with ``<reflection>``s inside, then one ``<output>``.

Nothing but whitespace may stand outside the tags. Unchecked traces are how a model ends up
claiming more than it can do; this is the structural half of the check (``verify`` is the other).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TAGS = re.compile(r"<(/?)(thinking|reflection|output)\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class TraceCheck:
    valid: bool
    reason: str | None
    thinking: str | None = None
    output: str | None = None
    reflections: tuple[str, ...] = field(default=())

    @property
    def n_reflections(self) -> int:
        return len(self.reflections)


def validate_trace(text: str) -> TraceCheck:
    """Check the structure; return the parts and the first problem found (``reason``)."""
    stack: list[tuple[str, int]] = []
    thinking: str | None = None
    output: str | None = None
    reflections: list[str] = []
    pos = 0
    for m in _TAGS.finditer(text or ""):
        between = text[pos : m.start()]
        pos = m.end()
        if not stack and between.strip():
            return TraceCheck(False, "text_outside_tags")
        closing, name = m.group(1) == "/", m.group(2).lower()
        if closing:
            if not stack or stack[-1][0] != name:
                return TraceCheck(
                    False, f"unopened_tag:{name}" if not stack else f"unclosed_tag:{stack[-1][0]}"
                )
            _, start = stack.pop()
            inner = text[start : m.start()]
            if name == "thinking":
                thinking = inner.strip()
            elif name == "reflection":
                reflections.append(inner.strip())
            else:
                output = inner.strip()
            continue
        reason = _opening_problem(name, stack, thinking is not None, output is not None)
        if reason:
            return TraceCheck(False, reason)
        stack.append((name, m.end()))
    if stack:
        return TraceCheck(False, f"unclosed_tag:{stack[-1][0]}")
    if pos == 0:
        return TraceCheck(False, "no_thinking")  # no tag at all: a plain answer, not a trace
    if text[pos:].strip():
        return TraceCheck(False, "text_outside_tags")
    if thinking is None:
        return TraceCheck(False, "no_thinking")
    if output is None:
        return TraceCheck(False, "no_output")
    if not output:
        return TraceCheck(False, "empty_output")
    return TraceCheck(True, None, thinking, output, tuple(reflections))


def _opening_problem(
    name: str, stack: list[tuple[str, int]], seen_thinking: bool, seen_output: bool
) -> str | None:
    inside = stack[-1][0] if stack else None
    if name == "reflection":
        if inside == "reflection":
            return "nested_reflection"
        return None if inside == "thinking" else "reflection_outside_thinking"
    if inside is not None:
        return f"{name}_inside_{inside}"
    if name == "thinking":
        if seen_output:
            return "output_before_thinking"
        return "multiple_thinking" if seen_thinking else None
    # output
    if seen_output:
        return "multiple_output"
    return None if seen_thinking else "output_before_thinking"
