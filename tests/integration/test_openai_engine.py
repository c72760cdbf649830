"""The openai engine against a real ``vllm serve`` on 127.0.0.1, and its retry/error paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from infra.engines.openai_engine import BUDGET_EXHAUSTED, OpenAIEngine, OpenAIOptions
from tasks.engine import ChatRequest, EngineError, Sampling, ScoreRequest
from tests.local_http import JsonHandler, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(vllm_server: str, tiny_model_path: Path) -> OpenAIEngine:
    return OpenAIEngine("tiny", vllm_server, OpenAIOptions(tokenizer=str(tiny_model_path), concurrency=4))


def test_generate_returns_text_and_token_accounting(engine: OpenAIEngine) -> None:
    requests = [ChatRequest.user(f"Say something about the number {i}.") for i in range(5)]
    out = engine.generate(requests, Sampling(max_tokens=12, temperature=0.0))
    assert len(out) == 5
    for c in out:
        assert c.error is None
        assert c.finish_reason in ("stop", "length")
        assert c.prompt_tokens > 0 and 0 < c.completion_tokens <= 12
    assert engine.usage.completion_tokens == sum(c.completion_tokens for c in out)
    assert engine.usage.prompt_tokens == sum(c.prompt_tokens for c in out)


def test_token_budget_stops_cleanly(vllm_server: str, tiny_model_path: Path) -> None:
    from tasks.budget import prompt_tokens_at_most

    request = ChatRequest.user("hello")
    bound = prompt_tokens_at_most(request) + 4  # what one request may cost at most
    eng = OpenAIEngine(
        "tiny",
        vllm_server,
        OpenAIOptions(tokenizer=str(tiny_model_path), concurrency=1, token_budget=bound + 1),
    )
    out = eng.generate([request] * 3, Sampling(max_tokens=4, temperature=0.0))
    assert out[0].error is None
    # The first answer's usage leaves less than a second request's bound: never sent.
    refused = f"{BUDGET_EXHAUSTED} (token budget of {bound + 1:,} tokens)"
    assert [c.error for c in out[1:]] == [refused, refused]
    assert eng.usage.total <= bound + 1


def test_scores_through_vllm_serve_equal_hf(engine: OpenAIEngine, tiny_model_path: Path) -> None:
    from infra.engines.hf_engine import HFEngine, HFOptions

    hf = HFEngine(str(tiny_model_path), HFOptions(dtype="float32"))
    try:
        reqs = [
            ScoreRequest(hf.tokenizer.chat_prefix("Name a colour."), "Blue is a colour."),
            ScoreRequest("", "Blue is a colour."),
            ScoreRequest(hf.tokenizer.chat_prefix("Count to three."), "One, two, three."),
            ScoreRequest("", ""),
        ]
        ours, ref = engine.target_logprobs(reqs), hf.target_logprobs(reqs)
    finally:
        hf.close()
    for a, b in zip(ours, ref, strict=True):
        assert a.error == b.error
        assert len(a.logprobs) == len(b.logprobs)
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


class Scripted(JsonHandler):
    """Answers with a scripted list of (status, body); records what it was sent."""

    script: ClassVar[list[tuple[int, dict]]] = []
    seen: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.read_json()
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        status, payload = type(self).script.pop(0)
        self.send_json(status, payload)


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[Scripted]]]:
    handler = type("Handler", (Scripted,), {"script": [], "seen": []})
    with serving(handler) as url:
        yield f"{url}/v1", handler


CHAT_OK = {
    "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}


def test_retries_429_and_5xx_then_succeeds(scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = scripted
    monkeypatch.setenv("TEST_KEY", "sk-secret-value")
    handler.script[:] = [(429, {"error": "slow down"}), (503, {"error": "busy"}), (200, CHAT_OK)]
    eng = OpenAIEngine("m", url, OpenAIOptions(api_key_env="TEST_KEY", max_retries=3))
    [c] = eng.generate([ChatRequest.user("x")], Sampling(max_tokens=2))
    assert c.text == "hi" and c.completion_tokens == 1
    assert len(handler.seen) == 3
    assert handler.seen[0]["auth"] == "Bearer sk-secret-value"
    assert "sk-secret-value" not in repr(eng)


def test_an_account_out_of_quota_is_an_error_not_a_wait(scripted) -> None:
    url, handler = scripted
    body = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}
    handler.script[:] = [(429, body)]
    eng = OpenAIEngine("m", url, OpenAIOptions(max_retries=0))
    with pytest.raises(EngineError, match="quota is used up"):
        eng.generate([ChatRequest.user("x")], Sampling(max_tokens=2))
    assert len(handler.seen) == 1


def test_server_without_prompt_logprobs_gets_a_clear_error(scripted, tiny_model_path: Path) -> None:
    url, handler = scripted
    handler.script[:] = [(200, {"choices": [{"index": 0, "text": "x", "finish_reason": "length"}]})]
    eng = OpenAIEngine("m", url, OpenAIOptions(tokenizer=str(tiny_model_path)))
    with pytest.raises(EngineError, match="prompt log-probs"):
        eng.target_logprobs([ScoreRequest("", "some target text")])


def test_remote_endpoint_without_key_is_refused_without_leaking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    eng = OpenAIEngine("gpt-4o-mini", "https://api.example.invalid/v1")
    with pytest.raises(EngineError, match="OPENAI_API_KEY"):
        eng.generate([ChatRequest.user("x")], Sampling())
