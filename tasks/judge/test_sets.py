"""The questions of the papers' five test sets and of answer files, read the way the reference reads them.

Each test set keeps its prompt under its own key (Cherry_LLM ``eval.py``): Vicuna ``text``, Koala
``prompt``, Self-Instruct ``instruction`` plus ``{instruction} Input: {input}`` when its one instance
has an input, WizardLM ``Instruction``, LIMA ``conversations`` (its first turn). An answer file's rows
hold the question under ``instruction`` (with an optional ``input``), under the test set's own key or
under ``question``, and the answer under ``output``. Pure: records in, items or a clear error naming
the row out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.benchmark_records import LOOKED_FOR, prompt_field, user_turns
from tasks.ingest.records import Question

from .protocol import question_text

TEST_SETS = ("vicuna", "koala", "wizardlm", "sinstruct", "lima")


class TestSetError(ValueError):
    """A test set or an answer file that cannot be read as one, naming the row."""


@dataclass(frozen=True)
class Answer:
    """One row of an answer file: its question, its answer and the test set it names (if any)."""

    line: int
    question: str
    output: str
    test_set: str | None = None


def question_of(record: Mapping[str, Any]) -> str | None:
    """The question a record holds (``tasks.benchmark_records``): its first text prompt, with
    Self-Instruct's input or an answer file's ``input`` after it, else the first user turn of its
    conversation (LIMA); None when it holds none."""
    found = prompt_field(record)
    if found is None:
        turns = user_turns(record)
        return question_text(turns[0], "") if turns else None
    key, value = found
    instances = record.get("instances")
    if key == "instruction" and isinstance(instances, list) and instances:
        extra = instances[0].get("input") if isinstance(instances[0], dict) else None
        return question_text(value, extra or "")
    extra = record.get("input") if key == "instruction" else None
    return question_text(value, extra if isinstance(extra, str) else "")


def test_set_questions(name: str, records: Sequence[tuple[int, Any]], where: str) -> list[Question]:
    """The questions of a test set's records ((line, record) pairs); an error names a row without one."""
    out = []
    for index, (line, record) in enumerate(records):
        question = question_of(record) if isinstance(record, dict) else None
        if question is None:
            raise TestSetError(f"{where}:{line}: no question (looked for {LOOKED_FOR})")
        out.append(Question.of_test_set(name, index, question))
    return out


def answers_of(records: Sequence[tuple[int, Any]], where: str) -> list[Answer]:
    """The rows of an answer file; a row without a question or an ``output`` is an error naming it."""
    out = []
    for line, record in records:
        if not isinstance(record, dict):
            raise TestSetError(f"{where}:{line}: not a JSON object")
        question = question_of(record)
        if question is None:
            raise TestSetError(f"{where}:{line}: no question (looked for {LOOKED_FOR})")
        output = record.get("output")
        if not isinstance(output, str):
            raise TestSetError(f"{where}:{line}: no 'output' text")
        test_set = record.get("test_set") or record.get("dataset")
        out.append(Answer(line, question, output, str(test_set) if test_set else None))
    return out


def pair_answers(
    a: Sequence[Answer], b: Sequence[Answer], where_a: str, where_b: str, default_set: str
) -> list[tuple[Question, str, str]]:
    """(question, A's answer, B's answer) by position; a question that differs between the two files
    is an error naming both rows, and so is a different number of rows."""
    if len(a) != len(b):
        raise TestSetError(
            f"{where_a} has {len(a)} answers but {where_b} has {len(b)}: rows pair by position"
        )
    counters: dict[str, int] = {}
    out = []
    for row_a, row_b in zip(a, b, strict=True):
        if row_a.question.strip() != row_b.question.strip():
            raise TestSetError(
                f"{where_a}:{row_a.line} and {where_b}:{row_b.line} answer different questions: "
                f"{_clip(row_a.question)!r} vs {_clip(row_b.question)!r}"
            )
        name = row_a.test_set or row_b.test_set or default_set
        index = counters.get(name, 0)
        counters[name] = index + 1
        out.append((Question.of_test_set(name, index, row_a.question), row_a.output, row_b.output))
    return out


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
