"""``reflectory run``: a flag overrides the config file only when it is given, field by field."""

from __future__ import annotations

from typing import Any

import pytest

from flows.cli.run import merge_flags
from flows.params import RecycleParams

FILE: dict[str, Any] = {
    "input": "from-file.jsonl",
    "store": "./cfgstore",
    "run_id": "file-run",
    "teacher": {
        "spec": "hf:/models/tiny-teacher",
        "options": {"dtype": "float32", "threads": 1},
        "replicas": 2,
    },
    "student": {"spec": "hf:/models/tiny-student", "options": {"max_length": 512}, "replicas": 3},
    "sampling": {"max_tokens": 8, "temperature": 0.0, "top_p": 0.9, "repetition_penalty": 1.1},
    "constrained": True,
    "shard_size": 3,
    "limit": 7,
    "ray_address": "auto",
    "offline": True,
}
NO_FLAGS: dict[str, Any] = dict.fromkeys(
    (
        "input", "store", "teacher", "student", "teacher_options", "student_options", "teacher_replicas",
        "student_replicas", "run_id", "shard_size", "limit", "max_tokens", "temperature",
        "repetition_penalty", "constrained", "ray_address", "offline",
    )
)  # fmt: skip


def params(**flags: Any) -> RecycleParams:
    return RecycleParams(**merge_flags(FILE, {**NO_FLAGS, **flags}))


def test_without_flags_every_field_comes_from_the_file() -> None:
    p = params()
    assert p.model_dump(exclude_defaults=True) == RecycleParams(**FILE).model_dump(exclude_defaults=True)
    assert (p.store, p.shard_size, p.limit, p.run_id, p.ray_address, p.offline) == (
        "./cfgstore",
        3,
        7,
        "file-run",
        "auto",
        True,
    )
    assert p.teacher.spec == "hf:/models/tiny-teacher" and p.teacher.replicas == 2
    assert p.student.options == {"max_length": 512} and p.sampling.max_tokens == 8


@pytest.mark.parametrize(
    ("flag", "value", "read"),
    [
        ("input", "flag.jsonl", lambda p: p.input),
        ("store", "./flagstore", lambda p: p.store),
        ("run_id", "flag-run", lambda p: p.run_id),
        ("shard_size", 5, lambda p: p.shard_size),
        ("limit", 2, lambda p: p.limit),
        ("ray_address", "ray://head:10001", lambda p: p.ray_address),
        ("offline", False, lambda p: p.offline),
        ("teacher", "vllm:org/teacher", lambda p: p.teacher.spec),
        ("student", "openai:m@http://127.0.0.1:1/v1", lambda p: p.student.spec),
        ("teacher_replicas", 4, lambda p: p.teacher.replicas),
        ("student_replicas", 1, lambda p: p.student.replicas),
        ("max_tokens", 64, lambda p: p.sampling.max_tokens),
        ("temperature", 0.5, lambda p: p.sampling.temperature),
        ("repetition_penalty", 1.2, lambda p: p.sampling.repetition_penalty),
        ("constrained", False, lambda p: p.constrained),
    ],
)
def test_a_given_flag_overrides_only_its_field(flag: str, value: Any, read: Any) -> None:
    p = params(**{flag: value})
    assert read(p) == value
    base = RecycleParams(**FILE).model_dump()
    changed = {k for k, v in p.model_dump().items() if base[k] != v}
    assert len(changed) == 1  # nothing else moved


def test_engine_option_flags_merge_into_the_files_options() -> None:
    p = params(
        teacher_options={"threads": 2, "chat_template": "vicuna"}, student_options={"dtype": "float32"}
    )
    assert p.teacher.options == {"dtype": "float32", "threads": 2, "chat_template": "vicuna"}
    assert p.student.options == {"max_length": 512, "dtype": "float32"}
    assert p.teacher.spec == "hf:/models/tiny-teacher" and p.sampling.top_p == 0.9


def test_without_a_file_the_models_defaults_apply() -> None:
    p = RecycleParams(**merge_flags({}, {**NO_FLAGS, "input": "x.jsonl"}))
    assert p == RecycleParams(input="x.jsonl")


def test_a_file_may_use_the_flags_names_and_bare_specs() -> None:
    flat = {
        "input": "in.jsonl", "store": "./cfgstore", "teacher": "hf:/models/tiny", "student": "hf:/models/s",
        "teacher_options": {"dtype": "float32"}, "student_replicas": 2, "max_tokens": 8,
        "temperature": 0.0, "shard_size": 3,
    }  # fmt: skip
    p = RecycleParams(**merge_flags(flat, dict(NO_FLAGS)))
    assert (p.teacher.spec, p.teacher.options, p.student.spec, p.student.replicas) == (
        "hf:/models/tiny",
        {"dtype": "float32"},
        "hf:/models/s",
        2,
    )
    assert (p.sampling.max_tokens, p.sampling.temperature, p.store, p.shard_size) == (8, 0.0, "./cfgstore", 3)
    flagged = RecycleParams(**merge_flags(flat, {**NO_FLAGS, "max_tokens": 64, "teacher_options": {"x": 1}}))
    assert flagged.sampling.max_tokens == 64 and flagged.teacher.options == {"dtype": "float32", "x": 1}


def test_price_flags_merge_into_the_files_prices_key_by_key() -> None:
    from flows.cli.run import parse_prices

    base = {**FILE, "teacher": {**FILE["teacher"], "prices": {"input": 0.5, "output": 1.5}}}
    flags = {
        **NO_FLAGS,
        "teacher_prices": parse_prices(["output=2"]),
        "student_prices": parse_prices(["device-hour=3"]),
    }
    p = RecycleParams(**merge_flags(base, flags))
    assert (p.teacher.prices.input, p.teacher.prices.output, p.teacher.prices.device_hour) == (0.5, 2.0, None)
    assert p.student.prices.device_hour == 3.0 and not params().teacher.prices.given()


@pytest.mark.parametrize(("item", "why"), [("input", "KEY=VALUE"), ("input=cheap", "not a number")])
def test_a_bad_price_flag_says_why(item: str, why: str) -> None:
    from flows.cli.run import parse_prices

    with pytest.raises(ValueError, match=why):
        parse_prices([item])


def test_an_unknown_price_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="per_token"):
        RecycleParams(**merge_flags(FILE, {**NO_FLAGS, "teacher_prices": {"per_token": 1.0}}))
