"""Named chat templates for models that ship none (base models such as Llama-2-7b-hf).

Each renders one user message followed by the assistant's generation prompt; the response is
appended right after it. Pure string formatting, so the seam between prefix and response is exact.
"""

from __future__ import annotations

NAMED_TEMPLATES: dict[str, str] = {
    "vicuna": (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions. USER: {message} ASSISTANT: "
    ),
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{message}\n\n### Response:\n"
    ),
    "llama-3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{message}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
}


def render_named(template: str, message: str) -> str:
    """Render a named template; raise ValueError naming the known ones."""
    try:
        return NAMED_TEMPLATES[template].format(message=message)
    except KeyError:
        known = ", ".join(sorted(NAMED_TEMPLATES))
        raise ValueError(f"unknown chat template {template!r}; known: {known} (or 'model')") from None
