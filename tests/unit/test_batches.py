"""The Batch API's rules (tasks.batches): stable ids, files within the limits, results read back."""

from __future__ import annotations

import json

import pytest

from tasks.batches import batch_key, custom_id, jsonl_line, next_poll, read_results, split_files

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def test_ids_come_from_the_content_so_a_rerun_finds_the_same_batch() -> None:
    assert custom_id(BODY) == custom_id(dict(reversed(BODY.items())))
    assert custom_id(BODY) != custom_id({**BODY, "max_tokens": 9})
    ids = [custom_id(BODY), custom_id({**BODY, "seed": 1})]
    assert batch_key(ids) == batch_key(list(reversed(ids)))
    assert batch_key(ids, attempt=2) != batch_key(ids)
    line = json.loads(jsonl_line(ids[0], BODY))
    assert line == {"custom_id": ids[0], "method": "POST", "url": "/v1/chat/completions", "body": BODY}


def test_files_split_at_the_request_and_byte_limits() -> None:
    lines = [b"x" * 10] * 7
    assert split_files(lines, max_requests=3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert split_files(lines, max_bytes=25) == [[0, 1], [2, 3], [4, 5], [6]]
    with pytest.raises(ValueError, match="request 1 is 30 bytes"):
        split_files([b"x", b"y" * 30], max_bytes=25)


def test_results_read_both_files_and_keep_the_providers_reason() -> None:
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}, "error": None}
    refused = {
        "custom_id": "b",
        "response": {"status_code": 400, "body": {"error": {"code": "bad", "message": "no"}}},
    }
    expired = {"custom_id": "c", "response": None, "error": {"code": "batch_expired", "message": "too late"}}
    results = read_results(json.dumps(ok) + "\n" + json.dumps(refused), json.dumps(expired) + "\n")
    assert list(results.bodies) == ["a"]
    assert results.failures == {"b": "bad: no", "c": "batch_expired: too late"}


def test_polling_backs_off_to_a_cap() -> None:
    waits = [5.0]
    for _ in range(8):
        waits.append(next_poll(waits[-1], 5.0))
    assert waits[:3] == [5.0, 7.5, 11.25] and waits[-1] == 60.0
    assert next_poll(0.0, 5.0) == 5.0
