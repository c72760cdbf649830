"""Replies addressed by their content (tasks.replies): what changes a reply changes its key, and
nothing else does."""

from __future__ import annotations

from tasks.engine import ChatRequest, ModelRole, Sampling
from tasks.replies import model_identity, reply_key
from tasks.teacher.forms import instruction_form

REQUEST = ChatRequest.user("Critique this pair.", system="You are a teacher.")
SAMPLING = Sampling(max_tokens=64, temperature=0.7, seed=3)


TEACHER = ModelRole(spec="openai:gpt-4o-mini")


def key(role: ModelRole = TEACHER, request: ChatRequest = REQUEST, sampling: Sampling = SAMPLING) -> str:
    return reply_key(model_identity(role), request, sampling)


def test_the_same_request_to_the_same_model_has_one_key() -> None:
    assert key() == key()
    assert len(key()) == 64


def test_what_changes_a_reply_changes_its_key() -> None:
    base = key()
    assert key(ModelRole(spec="openai:gpt-4o")) != base
    assert key(ModelRole(spec="openai:gpt-4o-mini", options={"structured": "vllm"})) != base
    assert key(request=ChatRequest.user("Critique this pair!", system="You are a teacher.")) != base
    assert key(request=ChatRequest.user("Critique this pair.")) != base  # no system prompt
    assert key(request=ChatRequest(REQUEST.messages, form=instruction_form(64))) != base
    assert key(request=ChatRequest(REQUEST.messages, max_tokens=32)) != base
    assert key(sampling=SAMPLING.model_copy(update={"seed": 4})) != base
    assert key(sampling=SAMPLING.model_copy(update={"temperature": 0.0})) != base


def test_how_requests_are_sent_does_not() -> None:
    sending = {"concurrency": 4, "token_budget": 10, "max_cost": 1.0, "rpm": 60, "tpm": 6000, "timeout_s": 9}
    assert key(ModelRole(spec="openai:gpt-4o-mini", options=sending, replicas=3)) == key()
