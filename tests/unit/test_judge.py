"""The judge's protocol against the reference: prompt text, score parsing, the outcome rule, the tally."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.engine import ChatRequest, Completion, Sampling
from tasks.judge.protocol import (
    JUDGE_SAMPLING,
    pair_request,
    parse_rating,
    parse_score_pair,
    question_text,
    rating_request,
)
from tasks.judge.stages import AnswerItem, PairItem, judge_pairs, rate_answers
from tasks.judge.verdict import Tally, outcome
from tests.judge_reference import reference_outcome, reference_parse

# The reference's prompt (Cherry_LLM evaluation/generation/eval.py, gen_prompt), as published.
REF_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
REF_TEMPLATE = (
    "[Question]\n{question}\n\n[The Start of Assistant 1's Answer]\n{answer_1}\n\n"
    "[The End of Assistant 1's Answer]\n\n[The Start of Assistant 2's Answer]\n{answer_2}\n\n"
    "[The End of Assistant 2's Answer]\n\n[System]\n{criteria}\n\n"
)
REF_CRITERIA = (
    "We would like to request your feedback on the performance of two AI assistants in response to the "
    "user question displayed above.\nPlease rate the helpfulness, relevance, accuracy, level of details of "
    "their responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher score "
    "indicates better overall performance.\nPlease first output a single line containing only two values "
    "indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a space. "
    "In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
    "potential bias and ensuring that the order in which the responses were presented does not affect "
    "your judgment."
)


def test_the_pair_prompt_is_the_reference_prompt_word_for_word() -> None:
    request = pair_request("What is 2+2?", "4", "Four.\n\nIt is four.", None)
    system, user = request.messages
    assert system == {"role": "system", "content": REF_SYSTEM}
    expected = REF_TEMPLATE.format(
        question="What is 2+2?", answer_1="4", answer_2="Four.\n\nIt is four.", criteria=REF_CRITERIA
    )
    assert user == {"role": "user", "content": expected}
    assert request.form is None


def test_the_decoding_is_the_references() -> None:
    assert (JUDGE_SAMPLING.temperature, JUDGE_SAMPLING.max_tokens, JUDGE_SAMPLING.top_p) == (0.0, 256, 1.0)


def test_a_question_with_input_is_joined_as_the_reference_joined_self_instruct() -> None:
    assert question_text("Fix the grammar.", "me and him goes") == "Fix the grammar. Input: me and him goes"
    assert question_text("Say hi.") == "Say hi."
    # A conversation's last question comes after its earlier messages, each named by its role.
    history = (("system", "Be brief."), ("user", "Name a fruit."), ("assistant", "Apple."))
    assert question_text("Another?", "", history) == (
        "System: Be brief.\n\nUser: Name a fruit.\n\nAssistant: Apple.\n\nUser: Another?"
    )


@pytest.mark.parametrize(
    "review",
    ["8 7\nBecause.", "8,7", "8, 7", "8.5 9", " 8 7", "8 7 ", "8\t7", "Assistant 1: 8", "", "nine 7",
     "10 1\r\nx", "7 8\n\n9 9", "-1 3", "1e1 2"],
)  # fmt: skip
def test_scores_are_read_exactly_as_the_reference_reads_them(review: str) -> None:
    ours, ref = parse_score_pair(review), reference_parse(review)
    if ref == [-1, -1] and not review.startswith("-1"):
        assert not ours.ok and ours.error and ours.error.startswith("no_score_pair")
    else:
        assert list(ours.values) == ref


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789., \n\tax-"), max_size=12))
def test_any_reply_reads_as_the_reference_reads_it(review: str) -> None:
    ours, ref = parse_score_pair(review), reference_parse(review)
    if ours.ok:
        assert list(ours.values) == ref
    else:
        assert ref == [-1, -1]


@pytest.mark.parametrize(("a_first", "b_first"), list(itertools.product(
    [(8, 7), (7, 7), (6, 7)], [(8, 7), (7, 7), (6, 7)]
)))  # fmt: skip
def test_the_outcome_rule_is_the_references_in_every_case(
    a_first: tuple[float, float], b_first: tuple[float, float]
) -> None:
    assert outcome(a_first, b_first) == reference_outcome(a_first, b_first)


def test_named_cases_of_the_outcome_rule() -> None:
    assert outcome((9, 5), (5, 9)) == "win"  # A higher in both orders
    assert outcome((9, 5), (7, 7)) == "win"  # higher, then tied
    assert outcome((5, 9), (9, 5)) == "loss"
    assert outcome((9, 5), (9, 5)) == "tie"  # the judge prefers whichever is shown first
    assert outcome((7, 7), (7, 7)) == "tie"
    assert outcome(None, (5, 9)) == "failed" and outcome((9, 5), None) == "failed"


def test_the_tally_leaves_failed_items_out_of_the_winning_score() -> None:
    tally = Tally.of(["win", "win", "tie", "loss", "failed", "failed"])
    assert (tally.wins, tally.ties, tally.losses, tally.failed, tally.judged) == (2, 1, 1, 2, 4)
    assert tally.winning_score == pytest.approx((2 - 1) / 4 + 1)
    assert (tally + Tally(losses=4)).winning_score == pytest.approx((2 - 5) / 8 + 1)
    assert Tally.of(["failed"]).winning_score is None
    assert tally.as_dict()["n"] == 6
    with pytest.raises(ValueError, match="unknown outcome 'draw'"):
        Tally.of(["draw"])


@pytest.mark.parametrize(
    ("reply", "value", "error"),
    [("8\nGood.", 8.0, None), ("8/10\nGood.", 8.0, None), (" 7.5 ", 7.5, None), ("eleven", None, "no_rating"),
     ("0\nBad.", None, "rating_out_of_range"), ("12", None, "rating_out_of_range"), ("", None, "no_rating")],
)  # fmt: skip
def test_a_rating_is_one_number_from_1_to_10_on_the_first_line(
    reply: str, value: float | None, error: str | None
) -> None:
    got = parse_rating(reply)
    assert (got.values[0] if got.ok else None) == value
    assert (got.error or "").split(":")[0] == (error or "")


class ScriptedJudge:
    """A judge whose replies a test writes: it answers each prompt by the answers it shows."""

    spec = "scripted"

    def __init__(self, reply: dict[tuple[str, str], str], failed: set[str] = frozenset()) -> None:
        self.reply = reply
        self.failed = failed
        self.seen: list[ChatRequest] = []

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        self.seen.extend(requests)
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            first = text.split("[The Start of Assistant 1's Answer]\n")[1].split("\n\n[The End")[0]
            second = text.split("[The Start of Assistant 2's Answer]\n")[1].split("\n\n[The End")[0]
            if first in self.failed:
                out.append(Completion("", None, 0, 0, error="prompt_too_long: 9000 tokens > 8191"))
            else:
                out.append(Completion(self.reply[(first, second)], "stop", 10, 5))
        return out


def test_each_item_is_asked_in_both_orders_and_gets_the_reference_outcome() -> None:
    judge = ScriptedJudge(
        {("a1", "b1"): "9 5\nA better", ("b1", "a1"): "5 9\nA better",
         ("a2", "b2"): "8 8\nsame", ("b2", "a2"): "9 6\nfirst wins",
         ("a3", "b3"): "I cannot tell", ("b3", "a3"): "6 6\n"},
    )  # fmt: skip
    items = [PairItem(f"id{i}", f"q{i}", f"a{i}", f"b{i}") for i in (1, 2, 3)]
    rows = judge_pairs(items, judge, JUDGE_SAMPLING, constrained=True)
    assert len(judge.seen) == 6 and all(r.form is not None for r in judge.seen)
    assert [r["outcome"] for r in rows] == ["win", "loss", "failed"]
    assert rows[0]["a_first_score_a"] == 9 and rows[0]["b_first_score_a"] == 9
    assert rows[0]["judge_prompt_version"] == "judge_pair/v1+grammar"
    assert rows[2]["failure"].startswith("a_first: no_score_pair: first line 'I cannot tell'")
    assert rows[2]["b_first_score_b"] == 6 and rows[0]["prompt_tokens"] == 20


def test_a_request_the_engine_failed_alone_is_a_failed_item_with_its_reason() -> None:
    judge = ScriptedJudge({("b1", "a1"): "5 9\n"}, failed={"a1"})
    (row,) = judge_pairs([PairItem("id1", "q", "a1", "b1")], judge, JUDGE_SAMPLING, constrained=False)
    assert row["outcome"] == "failed" and row["failure"] == "a_first: prompt_too_long: 9000 tokens > 8191"
    assert row["judge_prompt_version"] == "judge_pair/v1"


def test_ratings_keep_the_reply_and_the_reason_of_a_failure() -> None:
    class Rater:
        spec = "rater"

        def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
            return [Completion("7\nfine" if "good" in r.messages[-1]["content"] else "meh", "stop", 3, 2)
                    for r in requests]  # fmt: skip

    rows = rate_answers(
        [AnswerItem("x", "q", "a good answer"), AnswerItem("y", "q", "bad")], Rater(), JUDGE_SAMPLING
    )
    assert [r["rating"] for r in rows] == [7.0, None]
    assert rows[1]["rating_failure"] == "no_rating: first line 'meh'" and rows[1]["rating_reply"] == "meh"
    assert rating_request("q", "a", None).messages[0]["content"].startswith("You are a helpful and precise")


def test_each_test_sets_question_is_read_by_its_own_key_as_the_reference_reads_it() -> None:
    from tasks.judge.test_sets import TestSetError, answers_of, pair_answers, question_of

    assert question_of({"text": "How are you?"}) == "How are you?"  # vicuna
    assert question_of({"prompt": "Write a haiku."}) == "Write a haiku."  # koala
    assert question_of({"Instruction": "Add 2 and 3."}) == "Add 2 and 3."  # wizardlm
    assert question_of({"conversations": ["Hi there", "Hello"]}) == "Hi there"  # lima, a list
    assert question_of({"conversations": "Hi there"}) == "Hi there"  # lima, one string
    sinstruct = {"instruction": "Fix it.", "instances": [{"input": "me go", "output": "I go"}]}
    assert question_of(sinstruct) == "Fix it. Input: me go"
    assert question_of({"instruction": "Fix it.", "input": "me go"}) == "Fix it. Input: me go"
    assert question_of({"question": "Why?"}) == "Why?" and question_of({"output": "x"}) is None
    a = answers_of([(1, {"instruction": "Q1", "output": "a"}), (2, {"text": "Q2", "output": "b"})], "a.jsonl")
    b = answers_of([(1, {"question": "Q1", "output": "c"}), (2, {"text": "Q2", "output": "d"})], "b.jsonl")
    paired = pair_answers(a, b, "a.jsonl", "b.jsonl", "answers")
    assert [(q.id, x, y) for q, x, y in paired] == [("answers/0", "a", "c"), ("answers/1", "b", "d")]
    with pytest.raises(TestSetError, match=r"a\.jsonl:2: no 'output' text"):
        answers_of([(2, {"instruction": "Q"})], "a.jsonl")
    with pytest.raises(TestSetError, match=r"a\.jsonl has 2 answers but b\.jsonl has 1"):
        pair_answers(a, b[:1], "a.jsonl", "b.jsonl", "answers")
