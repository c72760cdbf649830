"""The transformers engine: the CPU default and the reference for correctness.

Scoring runs the backbone once per length-sorted batch and applies the vocabulary projection only
at the positions that predict target tokens, in chunks: on a CPU the projection over a 49k
vocabulary is about a fifth of the FLOPs per token and a full-sequence log-softmax is memory-bound
(docs/architecture.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

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
from tasks.scoring.batching import length_batches
from tasks.scoring.templates import PromptFormat
from tasks.scoring.tokens import TokenPlan

from .options import HFOptions
from .tokenizer import TextTokenizer, score_distinct


class HFEngine:
    """A ``transformers`` causal LM behind the Engine interface."""

    def __init__(self, model_path: str, options: HFOptions | None = None, spec: str | None = None) -> None:
        from transformers import AutoModelForCausalLM

        self.options = opts = options or HFOptions()
        self.spec = spec or f"hf:{model_path}"
        if opts.threads is not None:
            torch.set_num_threads(opts.threads)
        self.device = _pick_device(opts.device)
        dtype = _pick_dtype(opts.dtype, self.device)
        self.tokenizer = TextTokenizer.load(model_path, opts.chat_template, opts.max_length)
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
        if opts.trust_remote_code:
            kwargs["trust_remote_code"] = True
        if opts.device_map:
            kwargs["device_map"] = opts.device_map
        if opts.load_in_4bit:
            kwargs["quantization_config"] = _bnb_4bit(dtype)
            kwargs.setdefault("device_map", "auto")
        try:
            model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
        except OSError as exc:
            raise EngineError(f"cannot load model {model_path!r} with transformers: {exc}") from exc
        if "device_map" not in kwargs:
            model = model.to(self.device)  # type: ignore[arg-type]
        self.model = model.eval()
        self.backbone = getattr(model, model.base_model_prefix)
        self.lm_head = model.get_output_embeddings()
        self.logit_softcap = getattr(model.config, "final_logit_softcapping", None)
        self.logit_scale = getattr(model.config, "logit_scale", None)
        on_gpu = self.device.type == "cuda"
        self.batch_tokens = opts.batch_tokens or (16384 if on_gpu else 2048)
        self.max_batch = opts.max_batch or (256 if on_gpu else 64)
        self.max_pad_fraction = (
            opts.max_pad_fraction if opts.max_pad_fraction is not None else (0.25 if on_gpu else 0.0)
        )
        # Requests worth merging into one call (replicas merge concurrent batches up to this).
        self.max_requests_per_call = opts.generation_batch * (4 if on_gpu else 1)
        # The model's context: prompts longer than this are refused one by one, never run.
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.n_forward_sequences = 0  # how many texts went through the model (tests count reuse with it)
        self._constraint: Any = None  # llguidance tokenizer, built on the first constrained batch

    # -- scoring ---------------------------------------------------------------------------------
    @property
    def prompt_format(self) -> PromptFormat:
        return self.tokenizer.prompt_format

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]:
        return score_distinct(self.tokenizer, requests, self._score_plans)

    def _score_plans(self, plans: list[TokenPlan]) -> list[tuple[float, ...]]:
        """Length-bucketed batches under the token budget; results in the order of ``plans``."""
        batches = length_batches(
            [len(p.input_ids) for p in plans],
            max_tokens=self.batch_tokens,
            max_pad_fraction=self.max_pad_fraction,
            max_batch=self.max_batch,
        )
        results: list[tuple[float, ...]] = [()] * len(plans)
        for batch in batches:
            for i, lps in zip(batch, self._forward([plans[i] for i in batch]), strict=True):
                results[i] = lps
        return results

    @torch.inference_mode()
    def _forward(self, plans: Sequence[TokenPlan]) -> list[tuple[float, ...]]:
        """One padded batch: backbone once, projection only where a target token is predicted."""
        longest = max(len(p.input_ids) for p in plans)
        pad_id = self.tokenizer.tok.pad_token_id
        pad_id = 0 if pad_id is None else pad_id
        ids = torch.full((len(plans), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(plans), longest), dtype=torch.long)
        rows: list[int] = []
        cols: list[int] = []
        targets: list[int] = []
        for b, plan in enumerate(plans):
            n = len(plan.input_ids)
            ids[b, :n] = torch.tensor(plan.input_ids)
            mask[b, :n] = 1
            span = range(plan.first_target - 1, n - 1)
            rows.extend([b] * len(span))
            cols.extend(span)
            targets.extend(plan.input_ids[plan.first_target :])
        needs_mask = any(len(p.input_ids) != longest for p in plans)
        device = self._input_device()
        hidden = self.backbone(
            input_ids=ids.to(device), attention_mask=mask.to(device) if needs_mask else None, use_cache=False
        ).last_hidden_state
        picked = hidden[torch.tensor(rows, device=hidden.device), torch.tensor(cols, device=hidden.device)]
        target_ids = torch.tensor(targets, device=hidden.device)
        out = torch.empty(len(targets), dtype=torch.float32)
        step = self.options.projection_chunk
        for s in range(0, len(targets), step):
            logits = self.lm_head(picked[s : s + step]).float()
            if self.logit_scale is not None:
                logits = logits * self.logit_scale
            if self.logit_softcap is not None:
                logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
            chosen = logits.gather(1, target_ids[s : s + step, None]).squeeze(1)
            out[s : s + step] = (chosen - torch.logsumexp(logits, dim=-1)).cpu()
        self.n_forward_sequences += len(plans)
        values = out.tolist()
        result, start = [], 0
        for plan in plans:
            result.append(tuple(values[start : start + plan.n_target]))
            start += plan.n_target
        return result

    def _input_device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        """Left-padded batched ``model.generate``; the reference path, not the fast one (use vllm).

        Each request fails alone: a prompt longer than the model's context is never run, and a batch
        that raises is run again one request at a time, so only the request at fault gets the error.
        """
        tok = self.tokenizer.tok
        ids = [
            self.tokenizer.prompt_ids(self.tokenizer.render_chat([dict(m) for m in r.messages]))
            for r in requests
        ]
        out: list[Completion] = [
            Completion("", None, len(i), 0, error=prompt_too_long(len(i), self.context_length)) for i in ids
        ]
        todo = [k for k, c in enumerate(out) if c.error is None]
        step = self.options.generation_batch
        for s in range(0, len(todo), step):
            chunk = todo[s : s + step]
            for k, c in zip(
                chunk,
                self._generate_alone_on_error(
                    [requests[k] for k in chunk], [ids[k] for k in chunk], sampling, tok
                ),
                strict=True,
            ):
                out[k] = c
        return out

    def _generate_alone_on_error(
        self, requests: Sequence[ChatRequest], ids: Sequence[list[int]], sampling: Sampling, tok: Any
    ) -> list[Completion]:
        try:
            return self._generate_batch(requests, ids, sampling, tok)
        except Exception as exc:
            if len(requests) == 1:
                return [
                    Completion("", None, len(ids[0]), 0, error=f"{REJECTED}: {type(exc).__name__}: {exc}")
                ]
        return [
            c
            for k in range(len(requests))
            for c in self._generate_alone_on_error(requests[k : k + 1], ids[k : k + 1], sampling, tok)
        ]

    @torch.inference_mode()
    def _generate_batch(
        self, requests: Sequence[ChatRequest], prompts: Sequence[list[int]], sampling: Sampling, tok: Any
    ) -> list[Completion]:
        start = time.perf_counter()
        enc = _left_padded(prompts, tok.pad_token_id if tok.pad_token_id is not None else 0)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        do_sample = sampling.temperature > 0
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "do_sample": do_sample,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        }
        if do_sample:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        if sampling.stop:
            gen_kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        if sampling.repetition_penalty != 1.0:
            gen_kwargs["repetition_penalty"] = sampling.repetition_penalty
        grammar = self._grammar([r.form for r in requests], enc["input_ids"].shape[1])
        if grammar is not None:
            from transformers import LogitsProcessorList

            gen_kwargs["logits_processor"] = LogitsProcessorList([grammar])
        device = self._input_device()
        generated = self.model.generate(
            input_ids=enc["input_ids"].to(device),
            attention_mask=enc["attention_mask"].to(device),
            **gen_kwargs,
        )
        latency = time.perf_counter() - start
        n_prompt = enc["input_ids"].shape[1]
        eos_ids = _eos_ids(self.model, tok)
        result = []
        for b in range(len(requests)):
            new = generated[b, n_prompt:].tolist()
            finish = "length"
            for k, t in enumerate(new):
                if t in eos_ids:
                    new, finish = new[:k], "stop"
                    break
            text = tok.decode(new, skip_special_tokens=True)
            if sampling.stop and finish == "length":
                cut = min((text.find(s) for s in sampling.stop if s in text), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            result.append(
                Completion(
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=int(enc["attention_mask"][b].sum()),
                    completion_tokens=len(new),
                    latency_s=latency,
                )
            )
        return result

    def _grammar(self, forms: Sequence[Any], prompt_length: int) -> Any:
        """The grammar processor of a batch with forms (llguidance), None for a free-text batch."""
        if all(f is None for f in forms):
            return None
        if self._constraint is None:
            from .grammar import GrammarConstraint

            self._constraint = GrammarConstraint(
                self.tokenizer.tok, sorted(_eos_ids(self.model, self.tokenizer.tok)), self.tokenizer.count
            )
        return self._constraint.processor(forms, prompt_length)

    def close(self) -> None:
        del self.model, self.backbone, self.lm_head
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """A left-padded batch (generation continues every row from its last real token)."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for b, p in enumerate(prompts):
        if p:
            ids[b, longest - len(p) :] = torch.tensor(list(p))
            mask[b, longest - len(p) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def _bnb_4bit(dtype: torch.dtype) -> Any:
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise EngineError("load_in_4bit needs bitsandbytes: pip install bitsandbytes") from exc
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")


def _eos_ids(model: Any, tok: Any) -> set[int]:
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tok.eos_token_id is not None:
        found.add(tok.eos_token_id)
    return found
