"""IFD / r-IFD math, the pass layout of a pair, and reuse of distinct texts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from tasks.engine import ScoreRequest, TargetLogprobs
from tasks.scoring.batching import length_batches
from tasks.scoring.ifd import Ratio, mean_loss
from tasks.scoring.score import PairText, pair_requests, score_pairs
from tasks.scoring.templates import ChatFormat, reverse_prompt

BRACKETS = ChatFormat("brackets", lambda ms: "".join(f"[{content}]" for _, content in ms))


def tagged(messages: Sequence[tuple[str, str]]) -> str:
    """A toy chat template: each message in its role's tags, then the assistant's opening tag."""
    return "".join(f"<{role[0]}>{content}</{role[0]}>" for role, content in messages) + "<a>"


def test_ratio_forms():
    r = Ratio(loss_cond=1.0, loss_direct=2.0)
    assert r.ppl == pytest.approx(math.exp(-1.0))
    assert r.loss == pytest.approx(0.5)
    both_below = Ratio(0.5, 0.6)
    assert (both_below.ppl < 1) == (both_below.loss < 1)


def test_nan_never_zero():
    assert math.isnan(mean_loss(()))
    assert math.isnan(Ratio(float("nan"), 1.0).ppl)
    assert math.isnan(Ratio(1.0, 0.0).loss)


def test_reverse_prompt_is_the_design_text():
    assert reverse_prompt("Y") == (
        "Below is the response to an instruction, please guess the corresponding instruction for the "
        "given response.\nY\nGenerate the instruction for the above response."
    )


def test_pair_requests_layout():
    fmt = ChatFormat("t", tagged)
    reqs = pair_requests(PairText("do x", "done"), fmt)
    assert reqs.cond_response == ScoreRequest("<u>do x</u><a>", "done")
    assert reqs.direct_response == ScoreRequest("", "done")
    assert reqs.cond_instruction == ScoreRequest(f"<u>{reverse_prompt('done')}</u><a>", "do x")
    assert reqs.direct_instruction == ScoreRequest("", "do x")


def test_chat_format_puts_the_input_after_a_blank_line_in_both_directions():
    fmt = ChatFormat("t", tagged)
    reqs = pair_requests(PairText("do x", "done", input="with y"), fmt)
    assert reqs.cond_response == ScoreRequest("<u>do x\n\nwith y</u><a>", "done")
    assert reqs.cond_instruction.target == reqs.direct_instruction.target == "do x\n\nwith y"


class CountingScorer:
    """A scripted scorer: log-prob of each target character is -len(context)/1000 - 0.1."""

    spec = "test:counting"

    def __init__(self) -> None:
        self.seen: list[ScoreRequest] = []

    prompt_format = BRACKETS

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]:
        self.seen.extend(requests)
        out = []
        for r in requests:
            if not r.target:
                out.append(TargetLogprobs(error="empty_target"))
            else:
                out.append(TargetLogprobs(logprobs=tuple(-0.1 - len(r.context) / 1000 for _ in r.target)))
        return out


def test_score_pairs_computes_each_distinct_text_once_and_combines():
    pairs = [PairText("a", "same answer"), PairText("b", "same answer"), PairText("a", "same answer")]
    scorer = CountingScorer()
    progress: list[int] = []
    scores = score_pairs(pairs, scorer, chunk_size=2, on_progress=progress.append)
    assert len(scorer.seen) == len(set(scorer.seen))
    # distinct: cond(a), cond(b), direct(answer), cond-rev(a), cond-rev(b), direct(a), direct(b)
    assert len(scorer.seen) == 7
    assert sum(progress) == 3
    s = scores[0]
    assert s.loss_direct == pytest.approx(0.1)
    assert s.loss_cond == pytest.approx(0.1 + len("[a]") / 1000)
    assert s.ifd.ppl == pytest.approx(math.exp(s.loss_cond - s.loss_direct))
    assert scores[0] == scores[2]
    assert s.n_response_tokens == len("same answer")
    assert s.score_error is None


def test_failed_pass_gives_nan_and_names_itself():
    [s] = score_pairs([PairText("instr", "")], CountingScorer())
    assert math.isnan(s.ifd.ppl)
    assert not math.isnan(s.rloss_direct)
    assert "response: empty_target" in (s.score_error or "")


def test_length_batches_budget_and_padding():
    lengths = [5, 9, 5, 5, 100, 9]
    batches = length_batches(lengths, max_tokens=20, max_pad_fraction=0.0)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or longest * len(b) <= 20
        assert len({lengths[i] for i in b}) == 1
    assert [4] in batches  # too long for the budget: alone
