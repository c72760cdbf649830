"""Any OpenAI-compatible endpoint (OpenAI, ``vllm serve``, others) behind the Engine interface.

Generation: concurrent chat requests up to a limit, each let through by the provider's rate limits
(``infra.limiter``: learned from the answers' ``x-ratelimit-*`` headers, shared by every replica of
the role on a cluster). A 429 pauses the role and the request waits its turn again; it never
becomes a lost pair. 5xx answers, timeouts and dropped connections are retried with exponential
backoff (tenacity). An optional token budget is reserved before sending (``tasks.budget``); inside
a pool the pool holds one budget for the whole run instead. Scoring: ``/v1/completions`` with
token-id prompts and vLLM's ``prompt_logprobs`` extension; the tokenizer and chat template are
loaded locally (they must be the served model's), and a server without prompt log-probs gets a
clear error.

The API key is read from the environment variable named in the options and is never logged, put
in an error message, or stored.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from tasks.budget import BUDGET_EXHAUSTED, Budget, exhausted
from tasks.engine import (
    PROMPT_TOO_LONG,
    REJECTED,
    ChatRequest,
    Completion,
    EngineError,
    Sampling,
    ScoreRequest,
    TargetLogprobs,
)
from tasks.scoring.templates import PromptFormat
from tasks.scoring.tokens import TokenPlan

from ..limiter import Limiter, LocalLimiter
from .options import OpenAIOptions
from .tokenizer import TextTokenizer, score_distinct

T = TypeVar("T")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
__all__ = ["BUDGET_EXHAUSTED", "DEFAULT_BASE_URL", "OpenAIEngine", "OpenAIOptions"]


class _Retryable(Exception):
    """A transient HTTP failure worth another try."""


class _Refused(EngineError):
    """The server refused this one request (HTTP 400, 413, 422): its own failure, not the run's."""

    def __init__(self, message: str, body: str) -> None:
        super().__init__(message)
        self.body = body

    @property
    def too_long(self) -> bool:
        """The server says the prompt does not fit its context (vLLM, OpenAI and others' wording)."""
        text = self.body.lower()
        return any(
            k in text for k in ("context length", "context_length", "maximum model length", "too long")
        )


@dataclass
class TokenUsage:
    """Tokens spent through one engine, shared by its concurrent requests."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class OpenAIEngine:
    """Chat completions and prompt log-probs over HTTP."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        options: OpenAIOptions | None = None,
        spec: str | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        """``limiter``: the rate limits this engine shares (a pool's named actor); by default its own."""
        self.options = options or OpenAIOptions()
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.spec = spec or f"openai:{model}@{self.base_url}"
        self.usage = TokenUsage()
        self.max_requests_per_call = self.options.concurrency
        self.seeds_each_request = True  # one HTTP request per chat, each with the seed
        self._structured: str | None = None  # "vllm" or "json_schema", asked once when "auto"
        self._tokenizer: TextTokenizer | None = None
        self._lock = threading.Lock()
        self._limiter = limiter
        self.budget = Budget(tokens=self.options.token_budget)
        self.throttled = 0  # 429s answered to this engine's requests

    @property
    def limiter(self) -> Limiter:
        with self._lock:
            if self._limiter is None:
                self._limiter = LocalLimiter(self.options.rpm, self.options.tpm)
            return self._limiter

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIEngine({self.spec!r})"

    # -- plumbing --------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = api_key(self.base_url, self.options.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _send(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any], *, retry_429: bool
    ) -> httpx.Response:
        """The server's answer; 5xx, timeouts and dropped connections are tried again (and 429s
        where ``retry_429``: scoring, which no provider limits as it does chat)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, (_Retryable, httpx.TransportError))),
            wait=wait_random_exponential(multiplier=0.5, max=30),
            stop=stop_after_attempt(self.options.max_retries + 1),
            reraise=True,
        ):
            with attempt:
                resp = await client.post(path, json=body)
                if resp.status_code >= 500 or (retry_429 and resp.status_code == 429):
                    raise _Retryable(f"HTTP {resp.status_code} from {self.base_url}{path}")
                return resp
        raise AssertionError("unreachable")

    def _checked(self, resp: httpx.Response, path: str) -> dict[str, Any]:
        if resp.status_code in (400, 413, 422):
            raise _Refused(
                f"HTTP {resp.status_code} from {self.base_url}{path}: {_short(resp.text)}", resp.text
            )
        if resp.status_code >= 400:
            raise EngineError(f"HTTP {resp.status_code} from {self.base_url}{path}: {_short(resp.text)}")
        return dict(resp.json())

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._checked(await self._send(client, path, body, retry_429=True), path)

    async def _chat(self, client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion, sent when the rate limits let it go; after a 429 it waits its turn
        again, for as long as the limits say (a request waits, it does not fail)."""
        path = "/chat/completions"
        chars = sum(len(str(m.get("content") or "")) for m in body["messages"])
        n = len(body["messages"])
        while True:
            tokens = await self.limiter.acquire(chars, n, int(body["max_tokens"]))
            try:
                resp = await self._send(client, path, body, retry_429=False)
            except BaseException:
                await self.limiter.failed(tokens)
                raise
            headers = dict(resp.headers)
            if resp.status_code == 429:
                if "insufficient_quota" in resp.text:  # OpenAI's 429 for an account out of credit
                    await self.limiter.failed(tokens)
                    raise EngineError(
                        f"{self.base_url} refused the request: the account's quota is used up (HTTP 429 "
                        f"insufficient_quota): {_short(resp.text)}"
                    )
                with self._lock:
                    self.throttled += 1
                await self.limiter.throttled(tokens, headers, resp.text)
                continue
            try:
                data = self._checked(resp, path)
            except BaseException:
                await self.limiter.answered(tokens, headers, 0, n, 0)
                raise
            usage = data.get("usage") or {}
            await self.limiter.answered(tokens, headers, chars, n, int(usage.get("prompt_tokens") or 0))
            return data

    def _client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.options.concurrency)
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers(), timeout=self.options.timeout_s, limits=limits
        )

    async def _gather(self, jobs: Sequence[Callable[[httpx.AsyncClient], Awaitable[T]]]) -> list[T]:
        sem = asyncio.Semaphore(self.options.concurrency)
        async with self._client() as client:

            async def run(job: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
                async with sem:
                    return await job(client)

            return list(await asyncio.gather(*(run(j) for j in jobs)))

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        mode = self.structured_mode() if any(r.form for r in requests) else "json_schema"
        return _run_sync(self._gather([self._chat_job(r, sampling, mode) for r in requests]))

    def structured_mode(self) -> str:
        """How reply forms reach this server: vLLM's grammar, or an OpenAI JSON-schema response_format.

        ``structured=auto`` asks the server once: ``vllm serve`` lists its models as owned by vLLM.
        """
        if self.options.structured != "auto":
            return self.options.structured
        with self._lock:
            if self._structured is None:
                self._structured = _run_sync(self._detect_vllm())
            return self._structured

    async def _detect_vllm(self) -> str:
        async with self._client() as client:
            try:
                resp = await client.get("/models")
                owners = (
                    {m.get("owned_by") for m in resp.json().get("data", [])} if resp.is_success else set()
                )
            except (httpx.HTTPError, ValueError, AttributeError):
                owners = set()
        return "vllm" if "vllm" in owners else "json_schema"

    def _form_body(self, request: ChatRequest, sampling: Sampling, mode: str) -> dict[str, Any]:
        """The request fields that carry the reply's form and the penalties, each by its server's name."""
        body: dict[str, Any] = {}
        if sampling.frequency_penalty:
            body["frequency_penalty"] = sampling.frequency_penalty
        if mode == "vllm" and sampling.repetition_penalty != 1.0:
            body["repetition_penalty"] = sampling.repetition_penalty  # vLLM's extra sampling field
        if request.form is None or (mode != "vllm" and not request.form.has_schema):
            return body  # free text: a judge's line of scores, on a server without grammars
        # With a local tokenizer (option ``tokenizer``) the fixed parts are counted exactly.
        count = self.tokenizer.count if self.options.tokenizer else None
        if mode == "vllm":
            body["structured_outputs"] = {"grammar": request.form.lark(count)}
        else:
            schema = request.form.json_schema(self.options.schema_chars_per_token, count=count)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.form.name, "schema": schema, "strict": True},
            }
        return body

    def chat_body(self, request: ChatRequest, sampling: Sampling, mode: str) -> dict[str, Any]:
        """The body of a chat completion request (also a Batch API line's body)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "max_tokens": request.max_tokens or sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        body.update(self._form_body(request, sampling, mode))
        return body

    def completion(
        self, data: dict[str, Any], request: ChatRequest, mode: str, latency_s: float
    ) -> Completion:
        """A Completion from a chat completion response body."""
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=latency_s,
            free=request.form is not None and mode != "vllm" and not request.form.has_schema,
        )

    def _chat_job(
        self, request: ChatRequest, sampling: Sampling, mode: str
    ) -> Callable[[httpx.AsyncClient], Awaitable[Completion]]:
        async def job(client: httpx.AsyncClient) -> Completion:
            completion = Completion("", None, 0, 0, error=exhausted(self.budget))
            reservation = None
            while self.budget.limited and reservation is None:
                reservation, final = self.budget.try_reserve(request, sampling)
                if final:
                    return completion
                if reservation is None:
                    await asyncio.sleep(0.05)  # it may fit once requests in flight have settled
            try:
                completion = await send(client)
            finally:
                if reservation is not None:
                    self.budget.settle(reservation, completion)
            return completion

        async def send(client: httpx.AsyncClient) -> Completion:
            body = self.chat_body(request, sampling, mode)
            start = time.perf_counter()
            try:
                data = await self._chat(client, body)
            except _Refused as exc:
                if exc.too_long:  # this request's prompt does not fit: it fails alone
                    return Completion(
                        "", None, 0, 0, time.perf_counter() - start, error=f"{PROMPT_TOO_LONG}: {exc}"
                    )
                if request.form is not None and (mode == "vllm" or request.form.has_schema):
                    raise EngineError(
                        f"{exc}\nThe server rejected the reply form sent as {mode!r} ({request.form.name}). "
                        "Pick another way with the teacher option structured=vllm|json_schema, or run with "
                        "constrained: false (free text, parsed as before)."
                    ) from None
                return Completion("", None, 0, 0, time.perf_counter() - start, error=f"{REJECTED}: {exc}")
            except (_Retryable, httpx.HTTPError) as exc:
                return Completion(
                    "", None, 0, 0, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}"
                )
            completion = self.completion(data, request, mode, time.perf_counter() - start)
            self.usage.prompt_tokens += completion.prompt_tokens
            self.usage.completion_tokens += completion.completion_tokens
            return completion

        return job

    # -- scoring ---------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> TextTokenizer:
        with self._lock:
            if self._tokenizer is None:
                from infra.models import resolve_model

                source = resolve_model(self.options.tokenizer or self.model)
                self._tokenizer = TextTokenizer.load(
                    source, self.options.chat_template, self.options.max_length
                )
            return self._tokenizer

    @property
    def prompt_format(self) -> PromptFormat:
        return self.tokenizer.prompt_format

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]:
        return score_distinct(self.tokenizer, requests, self._score_plans)

    def _score_plans(self, plans: list[TokenPlan]) -> list[tuple[float, ...]]:
        """Concurrent requests of ``score_batch`` token-id prompts each; results in plan order."""
        step = self.options.score_batch
        groups = [plans[s : s + step] for s in range(0, len(plans), step)]
        scored = _run_sync(self._gather([self._score_job(g) for g in groups]))
        return [lps for out in scored for lps in out]

    def _score_job(
        self, plans: Sequence[TokenPlan]
    ) -> Callable[[httpx.AsyncClient], Awaitable[list[tuple[float, ...]]]]:
        async def job(client: httpx.AsyncClient) -> list[tuple[float, ...]]:
            body = {
                "model": self.model,
                "prompt": [list(p.input_ids) for p in plans],
                "max_tokens": 1,
                "temperature": 0.0,
                "prompt_logprobs": 0,
            }
            try:
                data = await self._post(client, "/completions", body)
            except EngineError as exc:
                raise EngineError(f"{exc}\n{_NO_PROMPT_LOGPROBS.format(url=self.base_url)}") from None
            choices = sorted(data["choices"], key=lambda c: c["index"])
            return [
                _target_logprobs(plan, choice.get("prompt_logprobs"), self.base_url)
                for plan, choice in zip(plans, choices, strict=True)
            ]

        return job

    def close(self) -> None:
        self._tokenizer = None


_NO_PROMPT_LOGPROBS = (
    "Scoring needs an endpoint that returns prompt log-probs for token-id prompts "
    "(vLLM's `prompt_logprobs`); {url} does not. Score with a `vllm serve` endpoint, or the hf/vllm engine."
)


def _target_logprobs(plan: TokenPlan, prompt_logprobs: list[Any] | None, url: str) -> tuple[float, ...]:
    if not prompt_logprobs or len(prompt_logprobs) != len(plan.input_ids):
        raise EngineError(_NO_PROMPT_LOGPROBS.format(url=url))
    values = []
    for pos in range(plan.first_target, len(plan.input_ids)):
        entry = prompt_logprobs[pos] or {}
        token = plan.input_ids[pos]
        found = entry.get(str(token), entry.get(token))
        if found is None:
            raise EngineError(f"{url} returned no log-prob for prompt token {token} at position {pos}")
        values.append(float(found["logprob"] if isinstance(found, dict) else found))
    return tuple(values)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already has an event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return,unused-ignore]


def api_key(base_url: str, env: str) -> str | None:
    """The API key in the environment variable ``env``; None for a server on this machine, which may
    take none (``vllm serve``); an error naming the variable for any other server."""
    key = os.environ.get(env)
    if key:
        return key
    if (urlparse(base_url).hostname or "") in ("127.0.0.1", "localhost", "::1"):
        return None
    raise EngineError(f"no API key for {base_url}: set the environment variable {env}")
