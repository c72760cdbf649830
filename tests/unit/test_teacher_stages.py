"""Teacher stages with a scripted engine (pure stage logic only): rows, counts, accounting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.engine import ChatRequest, Completion, Sampling
from tasks.teacher.stages import generate_traces, reflect_instructions, reflect_responses


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


class Scripted:
    """Returns preset replies in order; records every generate call."""

    spec = "scripted:teacher"

    def __init__(self, replies: list[tuple[str, str]]) -> None:
        self.replies = list(replies)
        self.calls: list[list[ChatRequest]] = []

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        self.calls.append(list(requests))
        out = []
        for _ in requests:
            text, finish = self.replies.pop(0)
            out.append(
                Completion(text, finish, prompt_tokens=10, completion_tokens=len(text.split()), latency_s=0.1)
            )
        return out


PAIRS = [
    P("a", "Add 2 and 2.", "", "5"),
    P("b", "Summarise.", "A long text.", "Short."),
    P("c", "Hi", "", "Hello"),
]


def test_reflect_instructions_marks_and_counts_failures():
    teacher = Scripted(
        [
            (
                "Critique. [New Instruction] Add 2 and 2 and explain. [End] [New Answer] 4, because... [End]",
                "stop",
            ),
            ("no tags at all", "stop"),
            ("[New Instruction] I [End] [New Answer] cut", "length"),
        ]
    )
    sampling = Sampling(max_tokens=64, temperature=0.0)
    rows, stats = reflect_instructions(PAIRS, teacher, sampling, constrained=False)
    assert len(teacher.calls) == 1 and len(teacher.calls[0]) == 3  # one call for the batch
    assert [r.parse_status for r in rows] == ["ok", "missing_new_instruction", "truncated"]
    assert rows[0].new_instruction == "Add 2 and 2 and explain." and rows[0].new_answer == "4, because..."
    assert rows[2].new_instruction is None  # a failed parse never becomes a candidate
    assert stats.rows == 3 and stats.parsed == 1
    assert dict(stats.failed) == {"missing_new_instruction": 1, "truncated": 1}
    assert stats.prompt_tokens == 30 and stats.completion_tokens == sum(r.completion_tokens for r in rows)
    assert rows[0].prompt_version == "reflect_instruction/v2" and rows[0].teacher == "scripted:teacher"
    assert (
        teacher.calls[0][0].form is None
        and "[New Instruction]" in teacher.calls[0][0].messages[-1]["content"]
    )
    assert json.loads(rows[0].sampling_json)["max_tokens"] == 64
    assert rows[1].raw_text == "no tags at all"  # the whole reply is kept


def test_reflect_responses_uses_the_input_variant():
    teacher = Scripted(
        [("[Better Answer] 4 [End]", "stop"), ("[Better Answer] Brief. [End]", "stop"), ("x", "stop")]
    )
    rows, stats = reflect_responses(PAIRS, teacher, Sampling(), which="reflected", constrained=False)
    assert [r.stage for r in rows] == ["response_reflected"] * 3
    assert rows[1].prompt_version == "reflect_response_with_input/v2"
    assert "A long text." in teacher.calls[0][1].messages[-1]["content"]
    assert [r.better_answer for r in rows] == ["4", "Brief.", None]
    assert stats.parsed == 2


def test_engine_errors_are_marked():
    class Failing(Scripted):
        def generate(self, requests, sampling):
            return [Completion("", None, 0, 0, error="token_budget_exhausted") for _ in requests]

    rows, stats = reflect_responses(PAIRS[:1], Failing([]), Sampling(), which="original")
    assert rows[0].parse_status == "engine_error:token_budget_exhausted"
    assert stats.failed["engine_error:token_budget_exhausted"] == 1


def test_traces_are_validated_and_verified():
    teacher = Scripted(
        [
            ("<thinking>7+1=9<reflection>no, 8</reflection></thinking><output>8</output>", "stop"),
            ("<thinking>7+1</thinking><output>9</output>", "stop"),  # valid but wrong
            ("The answer is 8", "stop"),  # not a trace
            ("<thinking>a</thinking><output>8</output>", "stop"),  # no gold
        ]
    )
    qs = [
        Q("q1", "7+1?", "7+1=8\n#### 8"),
        Q("q2", "7+1?", "#### 8"),
        Q("q3", "7+1?", "#### 8"),
        Q("q4", "?", None),
    ]
    rows, stats = generate_traces(qs, teacher, Sampling(), constrained=False)
    assert [(r.valid, r.verified) for r in rows] == [
        (True, True),
        (True, False),
        (False, False),
        (True, None),
    ]
    assert rows[0].n_reflections == 1 and rows[2].invalid_reason == "no_thinking"
    assert teacher.calls[0][0].messages[0]["role"] == "system"
    assert stats.parsed == 3 and stats.failed["no_thinking"] == 1


def test_constrained_stages_send_their_form_and_parse_json_replies():
    reply = json.dumps(
        {"critique": "vague", "new_instruction": "Add 2 and 2; show the steps.", "new_answer": "4"}
    )
    teacher = Scripted([(reply, "stop")])
    rows, _ = reflect_instructions(PAIRS[:1], teacher, Sampling(max_tokens=320))
    [request] = teacher.calls[0]
    assert request.form is not None and request.form.name == "reflect_instruction"
    assert "one JSON object" in request.messages[-1]["content"]
    assert rows[0].parse_status == "ok" and rows[0].new_instruction == "Add 2 and 2; show the steps."
    assert rows[0].prompt_version == "reflect_instruction/v2+json" and rows[0].raw_text == reply

    teacher = Scripted([(json.dumps({"critique": "wrong sum", "better_answer": "4"}), "stop")])
    rows, _ = reflect_responses(PAIRS[:1], teacher, Sampling(max_tokens=320), which="original")
    assert rows[0].better_answer == "4" and teacher.calls[0][0].form.name == "reflect_response"


def test_constrained_traces_from_a_json_server_are_rendered_then_validated():
    steps = {"thinking": "7+1=9", "reflection": "no, 8", "after": "so 8", "output": "8"}
    teacher = Scripted([(json.dumps(steps), "stop")])
    rows, _ = generate_traces([Q("q1", "7+1?", "#### 8")], teacher, Sampling())
    assert teacher.calls[0][0].form.name == "trace"
    assert rows[0].valid and rows[0].verified and rows[0].raw_text.startswith("<thinking>")


def test_a_budget_too_small_for_the_form_sends_free_text_and_says_so_in_the_version():
    teacher = Scripted([("Critique. [New Instruction] Add", "length")])
    rows, stats = reflect_instructions(PAIRS[:1], teacher, Sampling(max_tokens=8))
    [request] = teacher.calls[0]
    assert request.form is None and "one JSON object" not in request.messages[-1]["content"]
    assert rows[0].prompt_version == "reflect_instruction/v2" and rows[0].parse_status == "truncated"
    assert stats.failed["truncated"] == 1


def test_a_conversations_last_exchange_is_reflected_with_its_history_shown_before_it():
    history = (("system", "Be brief."), ("user", "Name a fruit."), ("assistant", "Apple."))
    pairs = [P("a", "Another?", "", "Pear.", history), P("b", "Another?", "", "Pear.")]
    ok = json.dumps({"critique": "fine", "new_instruction": "Another fruit?", "new_answer": "Pear, green."})
    teacher = Scripted([(ok, "stop"), (ok, "stop")])
    rows, _ = reflect_instructions(pairs, teacher, Sampling(max_tokens=256, temperature=0.0))
    with_history, alone = (r.messages[-1]["content"] for r in teacher.calls[0])
    assert "last exchange of a conversation" in with_history and "last exchange" not in alone
    # The earlier messages, in order, before the pair; the pair after them, unchanged.
    at = [with_history.index(t) for t in ("[System]\nBe brief.", "[User]\nName a fruit.",
                                          "[Assistant]\nApple.", "[Instruction]\nAnother?")]  # fmt: skip
    assert at == sorted(at)
    assert alone == alone.replace("[User]", "")  # nothing of a conversation in a single-turn prompt
    assert [r.prompt_version for r in rows] == [
        "reflect_instruction/v2+history+json",
        "reflect_instruction/v2+json",
    ]
    teacher = Scripted([("[Better Answer] Pear, or a plum. [End]", "stop")] * 2)
    rows, _ = reflect_responses(pairs, teacher, Sampling(max_tokens=64), which="original", constrained=False)
    assert "[Assistant]\nApple." in teacher.calls[0][0].messages[-1]["content"]
    assert (
        rows[0].prompt_version == "reflect_response/v2+history"
        and rows[0].better_answer == "Pear, or a plum."
    )
