"""The engine interface, owned by the pure side: two verbs, one request type each, one result type each.

Stage logic in ``tasks/`` talks to this interface only; ``infra/`` implements it (transformers,
vLLM, OpenAI-compatible HTTP, and Ray pools of replicas). Kept free of heavy imports (no torch,
vllm, httpx, ray) so pure logic is tested in milliseconds. One model per concept: ``Sampling`` is
how a teacher samples, ``ModelRole`` is which model plays a role and on what resources; the flow
parameters, the Prefect UI form and the engine pools all use these two.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.cost import Prices

if TYPE_CHECKING:
    from tasks.scoring.templates import PromptFormat
    from tasks.teacher.forms import ReplyForm


class Sampling(BaseModel):
    """How the teacher samples each reply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(512, ge=1, description="Most new tokens in one teacher reply.")
    temperature: float = Field(0.7, ge=0, description="0 decodes greedily; higher is more varied.")
    top_p: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Sample only from the most likely tokens that add up to this probability.",
    )
    seed: int | None = Field(0, description="Fixes the sampling, so a rerun writes the same replies.")
    stop: tuple[str, ...] = Field((), description="Texts that end a reply early.")
    repetition_penalty: float = Field(
        1.0,
        gt=0,
        description="Above 1 discourages tokens already in the text (transformers and vLLM); 1 is off.",
    )
    frequency_penalty: float = Field(
        0.0,
        ge=-2,
        le=2,
        description="Above 0 discourages tokens by how often they appeared (vLLM, OpenAI-style servers).",
    )
    ignore_eos: bool = Field(
        False, description="Keep writing past the end-of-text token, to max_tokens (benchmarks; vLLM only)."
    )


class ModelRole(BaseModel):
    """A model that plays a role (teacher or student): which engine, its options, and its replicas."""

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(
        "vllm:smollm2",
        description="The engine and model: vllm:MODEL, hf:MODEL (a Hub id or a local folder), or "
        "openai:MODEL@BASE_URL. 'smollm2' is the small bundled model.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description='Engine options, e.g. {"dtype": "bfloat16", "tensor_parallel_size": 4} or '
        '{"chat_template": "vicuna"}.',
    )
    replicas: int = Field(
        1, ge=1, description="Copies of the model loaded at once; requests are balanced across them."
    )
    num_cpus: float | None = Field(
        None,
        ge=0,
        description="Ray CPUs reserved for each replica. Default: 1, and none for an openai: replica (an "
        "HTTP client). A replica on CPU computes with the smallest node's cores divided among the pool's "
        "replicas (OMP_NUM_THREADS overrides).",
    )
    num_gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs reserved for each replica. Default: for vLLM, tensor_parallel_size x "
        "pipeline_parallel_size when the Ray cluster has GPUs; for hf, 1 when it has GPUs; otherwise 0.",
    )
    batch_size: int = Field(64, ge=1, description="Requests sent to a replica in one batch.")
    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Most batches each replica holds at once, from all shards together. Default: as many "
        "as keep twice the engine's capacity of requests in flight.",
    )
    merge_bound: int | None = Field(
        None,
        ge=1,
        description="Most requests a replica hands its engine in one call, merged from concurrent "
        "batches. Default: the engine's (vLLM's max_num_seqs on a GPU, 16 on a CPU).",
    )
    max_batch_retries: int = Field(2, ge=0, description="Times a batch is sent again when its replica died.")
    spread: bool = Field(
        False,
        description="Place the replicas on as many Ray nodes as possible (SPREAD), so that one node's "
        "loss takes one replica; otherwise Ray packs them where it likes.",
    )
    persistent: bool = Field(
        False, description="Keep the replicas loaded after the run, for the next run on the same Ray cluster."
    )
    prices: Prices = Field(
        default_factory=Prices,
        description="Optional: $ per 1M input and output tokens (a served model) or per device-hour (local "
        "replicas). Without prices a run shows tokens and device-hours only.",
    )

    @model_validator(mode="before")
    @classmethod
    def _spec_alone(cls, data: Any) -> Any:
        """A bare spec (``teacher: hf:smollm2`` in a config file) is the role with its defaults."""
        return {"spec": data} if isinstance(data, str) else data

    def batched(self) -> bool:
        """Whether the role goes through the Batch API (``-T batch=true``): no replicas, a ledger."""
        return self.spec.startswith("openai:") and str(self.options.get("batch", "")).lower() in ("true", "1")

    def cpus(self) -> float:
        """Ray CPUs each replica reserves: ``num_cpus``, by default 1, or 0 for an HTTP client."""
        if self.num_cpus is not None:
            return self.num_cpus
        return 0.0 if self.spec.startswith("openai:") else 1.0

    def key(self) -> str:
        """Identity of the model a replica holds: same spec and options -> same replicas."""
        blob = json.dumps({"spec": self.spec, "options": self.options}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ChatRequest:
    """One chat to complete: OpenAI-style messages, and the form its reply must take (None: free text).

    Each engine enforces the form its own way (``tasks.teacher.forms``): a grammar on ``hf`` and
    ``vllm``, structured outputs or a JSON schema on OpenAI-style servers.
    """

    messages: tuple[dict[str, str], ...]
    form: ReplyForm | None = None
    max_tokens: int | None = None  # this request's own budget (None: the sampling's max_tokens)

    @classmethod
    def user(cls, content: str, system: str | None = None, form: ReplyForm | None = None) -> ChatRequest:
        msgs: list[dict[str, str]] = []
        if system:
            msgs.append({"role": "system", "content": system})
        msgs.append({"role": "user", "content": content})
        return cls(tuple(msgs), form)


# The causes of a request that failed alone (``Completion.error``, ``TargetLogprobs.error``): the
# cause comes first, then a colon and the details, e.g. "prompt_too_long: 5832 tokens > 2048".
PROMPT_TOO_LONG = "prompt_too_long"
REJECTED = "rejected"
REQUEST_FAILURES = (PROMPT_TOO_LONG, REJECTED)


def prompt_too_long(n_tokens: int, context: int) -> str | None:
    """The error of a prompt that leaves no room in a ``context``-token engine for one generated
    token, else None: every engine that counts prompts reports it the same way."""
    limit = context - 1
    return f"{PROMPT_TOO_LONG}: {n_tokens} tokens > {limit}" if n_tokens > limit else None


def failure_cause(reason: str) -> str:
    """The cause of a failure reason, without its details: what summaries count by."""
    return reason.split(":", 1)[0].strip()


@dataclass(frozen=True)
class Completion:
    """What a generation returned, with the accounting a data factory needs."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float = 0.0
    error: str | None = None
    free: bool = False  # the request had a form that this engine could not enforce: sent as free text
    reused_from: str | None = None  # the run that asked for this reply, when it was reused (tasks.replies)


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``target`` given ``context``.

    ``context == ""`` is a *direct* pass: the target alone, with the special tokens the tokenizer
    adds. Otherwise ``context`` is already rendered text (a prompt prefix) and the target follows it
    immediately, tokenised together (docs/scoring.md).
    """

    context: str
    target: str


@dataclass(frozen=True)
class TargetLogprobs:
    """Log-probabilities of each scored target token, or an error reason.

    ``logprobs`` is empty and ``error`` set when nothing could be scored. ``truncated`` tells that
    tokens were dropped from the left to fit ``max_length``; ``n_target_dropped`` counts target
    tokens among them.
    """

    logprobs: tuple[float, ...] = ()
    n_context_tokens: int = 0
    truncated: bool = False
    n_target_dropped: int = 0
    error: str | None = None
    token_ids: tuple[int, ...] = field(default=(), repr=False)


@runtime_checkable
class Generator(Protocol):
    """Generates chat completions (a teacher)."""

    spec: str

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]: ...


@runtime_checkable
class Scorer(Protocol):
    """Scores targets by their token log-probabilities (a student)."""

    spec: str

    @property
    def prompt_format(self) -> PromptFormat:
        """How a pair becomes the texts of its passes (the model's chat template or a named one)."""
        ...

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]: ...


class Engine(Generator, Scorer, Protocol):
    """An engine does both; ``close`` frees the model."""

    def close(self) -> None: ...


class EngineError(RuntimeError):
    """A clear, user-facing engine failure (bad spec, missing model, server without logprobs)."""
