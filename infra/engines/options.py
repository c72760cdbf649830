"""The options each engine takes (``-O key=value``), checked without loading any model.

Kept apart from the engines (no torch, vllm or httpx here), so that a run checks its options in
preflight, before Ray starts, and a typo is one line instead of a failed replica.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.engine import EngineError
from tasks.scoring.templates import check_template_name


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chat_template: str = Field(
        "model",
        description="'model' (the model's own), or vicuna, alpaca, wizardlm (the reference scorer's "
        "prompt texts), llama-3",
    )
    max_length: int = Field(2048, ge=1, description="scoring window in tokens")

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        return check_template_name(value)


class HFOptions(_Options):
    """Options of the ``hf:`` engine (all optional)."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    device_map: str | None = Field(None, description="'auto' spreads/offloads a large model (accelerate)")
    load_in_4bit: bool = False
    batch_tokens: int | None = Field(None, description="padded tokens per scoring batch (default by device)")
    max_pad_fraction: float | None = Field(None, ge=0.0, le=1.0)
    max_batch: int | None = Field(
        None, ge=1, description="texts per scoring batch (default 64 on CPU, 256 on GPU)"
    )
    projection_chunk: int = Field(1024, ge=1, description="target positions per vocabulary projection")
    generation_batch: int = Field(16, ge=1)
    trust_remote_code: bool = False
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads of this process (replicas sharing a machine split the cores)",
    )


class VLLMOptions(_Options):
    """Options of the ``vllm:`` engine; unset ones keep vLLM's defaults."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = Field(
        None, description="the engine's context in tokens (default: the model's own)"
    )
    quantization: str | None = Field(None, description="awq, gptq, fp8, bitsandbytes, ...")
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    cpu_offload_gb: float = Field(0.0, ge=0)
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_num_seqs: int | None = Field(
        None, ge=1, description="sequences vLLM schedules at once (default: vLLM's on a GPU, 16 on a CPU)"
    )
    enforce_eager: bool | None = Field(None, description="default: True on CPU, vLLM's default on GPU")
    seed: int = 0
    trust_remote_code: bool = False
    structured_outputs_backend: str = Field(
        "guidance", description="vLLM's structured-outputs backend; the forms' grammars need 'guidance'"
    )
    streaming: bool = Field(
        True,
        description="requests join the running engine between steps (false: one merged LLM.generate call "
        "per batch of batches, the older mode, kept for benchmarks)",
    )
    extra_args: dict[str, Any] = Field(default_factory=dict, description="passed to vllm.LLM as-is")


class OpenAIOptions(_Options):
    """Options of the ``openai:`` engine."""

    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    concurrency: int = Field(16, ge=1, description="requests in flight at once")
    max_retries: int = Field(6, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    token_budget: int | None = Field(
        None,
        ge=1,
        description="tokens (prompt + completion) this role may spend in a run, over all its replicas; "
        "reserved before each request is sent, so never overshot",
    )
    max_cost: float | None = Field(
        None,
        gt=0,
        description="dollars this role may spend in a run, at its prices (--teacher-price input=... "
        "output=...); reserved like token_budget",
    )
    rpm: int | None = Field(
        None, ge=1, description="requests per minute (default: learned from the x-ratelimit-* headers)"
    )
    tpm: int | None = Field(
        None, ge=1, description="tokens per minute (default: learned from the x-ratelimit-* headers)"
    )
    tokenizer: str | None = Field(None, description="local tokenizer for scoring (default: the model name)")
    batch: bool = Field(
        False,
        description="send the role's requests through the Batch API (/v1/files, /v1/batches): half the "
        "price and limits of their own, replies within 24 h; a rerun of the run id goes on waiting",
    )
    batch_discount: float = Field(0.5, gt=0, le=1, description="batch prices as a share of the given prices")
    batch_attempts: int = Field(
        3, ge=1, description="batches per request: those that failed or never ran are sent again until then"
    )
    batch_poll_s: float = Field(
        2.0, gt=0, description="first wait before looking at a batch (then 1.5x, to 60 s)"
    )
    batch_max_requests: int = Field(50_000, ge=1, description="requests per batch file (OpenAI's limit)")
    batch_max_bytes: int = Field(200 * 1024 * 1024, ge=1, description="bytes per batch file (OpenAI's limit)")
    max_enqueued_tokens: int | None = Field(
        None, ge=1, description="tokens (prompt bound + max_tokens) in batches not finished at once"
    )
    score_batch: int = Field(8, ge=1, description="token-id prompts per scoring request")
    structured: Literal["auto", "vllm", "json_schema"] = Field(
        "auto",
        description="how reply forms reach the server: 'vllm' (a grammar in structured_outputs, for vllm "
        "serve), 'json_schema' (response_format, OpenAI and most servers), 'auto' (vllm when the server "
        "is vLLM)",
    )
    schema_chars_per_token: float = Field(
        3.0,
        gt=0,
        description="json_schema bounds a field in characters: its token bound times this (3 suits "
        "English on large vocabularies; lower it for small ones)",
    )


OPTIONS: dict[str, type[_Options]] = {"hf": HFOptions, "vllm": VLLMOptions, "openai": OpenAIOptions}


def parse_engine_options(kind: str, spec: str, options: dict[str, Any]) -> Any:
    """The options model of an engine kind, or an EngineError naming the spec and the bad fields."""
    try:
        return OPTIONS[kind](**options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        known = ", ".join(sorted(OPTIONS[kind].model_fields))
        raise EngineError(f"bad options for {spec}: {problems} (options of {kind}: {known})") from None
