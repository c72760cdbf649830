"""Constrained teacher replies parse on every engine: hf (llguidance), vllm (structured outputs) and
openai against ``vllm serve`` (its structured outputs, and a JSON-schema ``response_format``).

The teacher is the tiny random model: left alone it writes no format at all, so every reply that
parses here does so because the engine enforced the form, within the token budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.engine import Sampling
from tasks.ingest.records import Question
from tasks.recycle.variants import SimplePair
from tasks.teacher.stages import generate_traces, reflect_instructions, reflect_responses

pytestmark = pytest.mark.slow

PAIRS = [
    SimplePair("a", "Give three tips for staying healthy.", "", "Eat well, sleep and move."),
    SimplePair("b", "Translate the sentence.", "The cat sleeps.", "Le chat dort."),
    SimplePair("c", "What is the capital of France?", "", "Paris."),
]
QUESTIONS = [Question("q", "Add 12 and 30.", "#### 42"), Question("r", "Hello?", None)]
SAMPLING = Sampling(max_tokens=160, temperature=0.8, seed=3, repetition_penalty=1.1)


def check_every_stage(teacher: Any) -> None:
    rows, _ = reflect_instructions(PAIRS, teacher, SAMPLING)
    assert [r.parse_status for r in rows] == ["ok"] * 3, [r.raw_text for r in rows]
    assert all(r.finish_reason != "length" and r.completion_tokens <= SAMPLING.max_tokens for r in rows)
    assert all(r.new_instruction and r.new_answer for r in rows)
    rows, _ = reflect_responses(PAIRS, teacher, SAMPLING, which="original")
    assert [r.parse_status for r in rows] == ["ok"] * 3, [r.raw_text for r in rows]
    traces, _ = generate_traces(QUESTIONS, teacher, Sampling(max_tokens=240, temperature=0.8, seed=3))
    assert all(t.valid for t in traces), [(t.invalid_reason, t.raw_text) for t in traces]
    assert all(1 <= t.n_reflections <= 2 for t in traces)
    assert traces[0].verified in (True, False) and traces[1].verified is None  # checked, not assumed


def test_hf_engine_replies_take_their_form(tiny_model_path: Path) -> None:
    from infra.engines.hf_engine import HFEngine, HFOptions

    engine = HFEngine(str(tiny_model_path), HFOptions(dtype="float32"))
    try:
        check_every_stage(engine)
        # Free text on the same engine: the random model writes no format (the constraint did it).
        rows, _ = reflect_instructions(PAIRS, engine, SAMPLING, constrained=False)
        assert all(r.parse_status != "ok" for r in rows)
    finally:
        engine.close()


def test_vllm_engine_replies_take_their_form(vllm_engine: Any) -> None:
    check_every_stage(vllm_engine)


@pytest.mark.parametrize("structured", ["auto", "json_schema"])
def test_openai_engine_against_vllm_serve_replies_take_their_form(
    vllm_server: str, tiny_model_path: Path, structured: str
) -> None:
    from infra.engines.openai_engine import OpenAIEngine, OpenAIOptions

    # The served model's tokenizer, so the forms' fixed parts are counted exactly (the tiny
    # vocabulary spends about a token per character of them).
    # A JSON schema bounds characters: the tiny byte-level vocabulary may spend 4 tokens on one.
    options = OpenAIOptions(
        structured=structured, tokenizer=str(tiny_model_path), schema_chars_per_token=0.25
    )
    engine = OpenAIEngine("tiny", vllm_server, options)
    assert engine.structured_mode() == ("vllm" if structured == "auto" else "json_schema")
    check_every_stage(engine)


def test_a_server_that_rejects_the_form_names_the_option(vllm_server: str) -> None:
    """vLLM rejects a schema it cannot compile: the error says how to send the form otherwise."""
    from infra.engines.openai_engine import OpenAIEngine, OpenAIOptions
    from tasks.engine import ChatRequest, EngineError
    from tasks.teacher.forms import FieldSpec, ReplyForm

    engine = OpenAIEngine("tiny", vllm_server, OpenAIOptions(structured="vllm", max_retries=0))
    broken = ReplyForm("broken", "json", (FieldSpec("not a rule name", 1.0, "x"),), 160)  # invalid Lark
    with pytest.raises(
        EngineError, match=r"rejected the reply form .*structured=vllm\|json_schema.*constrained: false"
    ):
        engine.generate([ChatRequest.user("Hi", form=broken)], SAMPLING)


def test_a_prompt_too_long_for_the_server_fails_alone(vllm_server: str) -> None:
    """vllm serve answers 400 for a prompt past its 2048-token context: that request's failure."""
    from infra.engines.openai_engine import OpenAIEngine, OpenAIOptions
    from tasks.engine import ChatRequest

    engine = OpenAIEngine("tiny", vllm_server, OpenAIOptions(max_retries=0))
    short, long = engine.generate([ChatRequest.user("Hi"), ChatRequest.user("word " * 3000)], SAMPLING)
    assert short.error is None
    assert long.error is not None and long.error.startswith("prompt_too_long: HTTP 400"), long.error
