"""A store with real rows of every kind the viewer shows, written through the store's own API and
decided by the real decision tree: pairs with their reflections and scores, a dropped pair whose
teacher request failed, a rejected input row, a finished runs row, and a traces run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.store import Store
from tasks.ingest.records import pair_id
from tasks.recycle.variants import request_failures, selection_rows
from tasks.teacher.stages import ReflectionRow

RUN = "recycle-view"
TRACES_RUN = "traces-view"
TEACHER, STUDENT = "hf:teacher", "hf:student"
HISTORY = (("system", "You are a health coach."), ("user", "I sleep five hours a night."),
           ("assistant", "That is less than most adults need."))  # fmt: skip

PAIRS = [
    # (instruction, input, output, rewritten instruction, better answer, ifd/rifd of ori, Q, A, QA)
    (
        "Give three tips for staying healthy.",
        "",
        "Eat, sleep, move.",
        "Give three science-backed tips for staying healthy, with a reason for each.",
        "Eat vegetables daily, sleep eight hours, and walk thirty minutes.",
        (0.8, 0.7),
        (0.9, 0.6),
        (0.6, 0.5),
        (0.7, 0.4),
    ),
    (
        "Name the capital of France.",
        "",
        "Paris.",
        "Name the capital of France and one fact about it.",
        "Paris, on the Seine, is France's capital.",
        (0.5, 0.6),
        (0.4, 0.7),
        (0.45, 0.5),
        (0.4, 0.6),
    ),
    (
        "Translate the sentence.",
        "Good morning, zebra marmalade sunrise.",
        "Buenos días.",
        "Translate 'Good morning' into Spanish.",
        "Buenos días, mermelada de cebra.",
        (0.9, 0.9),
        (0.95, 0.8),
        (1.2, 0.95),
        (0.9, 0.7),
    ),
    (
        "Write a haiku about rain.",
        "",
        "Rain falls softly down.",
        "Write a haiku about spring rain.",
        "Soft spring rain whispers / on the roof all night / green shoots wake",
        (0.7, 0.8),
        (0.6, 0.9),
        (0.65, 0.85),
        (0.5, 0.8),
    ),
]
LONG_INSTRUCTION = "Summarise these field notes. " + "river stone " * 40


def _reflection(pair_id: str, stage: str, status: str, raw: str, **parsed: str | None) -> dict[str, Any]:
    return ReflectionRow(
        source_id=pair_id,
        stage=stage,
        teacher=TEACHER,
        prompt_version="reflect/v2",
        instruction="",
        input="",
        output="",
        raw_text=raw,
        new_instruction=parsed.get("new_instruction"),
        new_answer=parsed.get("new_answer"),
        better_answer=parsed.get("better_answer"),
        parse_status=status,
        prompt_tokens=10,
        completion_tokens=0 if status != "ok" else 20,
        latency_s=0.1,
        finish_reason="stop" if status == "ok" else None,
        sampling_json="{}",
    ).to_dict()


def _score(
    pair_id: str, variant: str, ins: str, inp: str, out: str, ifd: float, rifd: float
) -> dict[str, Any]:
    return {
        "source_id": pair_id,
        "variant": variant,
        "student": STUDENT,
        "instruction": ins,
        "input": inp,
        "output": out,
        "ifd_ppl": ifd,
        "rifd_ppl": rifd,
        "ifd_loss": ifd,
        "rifd_loss": rifd,
        "loss_cond": 1.0,
        "loss_direct": 1.0,
        "rloss_cond": 1.0,
        "rloss_direct": 1.0,
        "n_response_tokens": 5,
        "n_instruction_tokens": 5,
        "truncated": False,
        "score_error": None,
        "scoring_version": "scoring/v2",
    }


JUDGED = {
    "judge": "hf:judge", "judge_prompt_version": "judge_pair/v1+grammar", "outcome": "win",
    "a_first_score_a": 9.0, "a_first_score_b": 6.0, "b_first_score_a": 8.5, "b_first_score_b": 7.0,
    "reply_a_first": "9 6\nThe reflected answer is clearer.", "reply_b_first": "7 8.5\nThe second one.",
    "kept_variant": "A", "rating": 8.0, "rating_reply": "8\nGood.",
}  # fmt: skip


def build(path: Path, *, finished: bool = True, run_id: str = RUN, extra: list[tuple] | None = None) -> Store:
    store = Store(str(path), create=True)
    pairs = list(PAIRS) + list(extra or [])
    seeds, reflections, scores = [], [], []
    for i, (ins, inp, out, new_ins, better, ori, q, a, qa) in enumerate(pairs):
        pid = pair_id(ins, inp, out)
        seeds.append(
            {
                "run_id": run_id,
                "source_id": pid,
                "instruction": ins,
                "input": inp,
                "output": out,
                "source": "view.jsonl",
                "source_line": i + 1,
                "ingested_at": datetime.now(UTC),
                # The first pair ends a conversation: its history is what the pair page folds.
                "messages": [
                    {"role": r, "content": c} for r, c in (*HISTORY, ("user", ins), ("assistant", out))
                ]
                if i == 0
                else None,
            }
        )
        critique = f"The instruction is vague. [New Instruction] {new_ins} [End] [New Answer] {better} [End]"
        reflections += [
            _reflection(pid, "instruction", "ok", critique, new_instruction=new_ins, new_answer=better),
            _reflection(
                pid, "response_original", "ok", f"[Better Answer] {better} [End]", better_answer=better
            ),
            _reflection(
                pid, "response_reflected", "ok", f"[Better Answer] {better} [End]", better_answer=better
            ),
        ]
        scores += [
            _score(pid, "ori", ins, inp, out, *ori),
            _score(pid, "Q", new_ins, "", better, *q),
            _score(pid, "A", ins, inp, better, *a),
            _score(pid, "QA", new_ins, "", better, *qa),
        ]
    # A pair too long for the teacher: every request failed alone; only ori was scored.
    long_id = pair_id(LONG_INSTRUCTION, "", "Notes.")
    seeds.append(
        {
            "run_id": run_id,
            "source_id": long_id,
            "instruction": LONG_INSTRUCTION,
            "input": "",
            "output": "Notes.",
            "source": "view.jsonl",
            "source_line": 99,
            "ingested_at": datetime.now(UTC),
        }
    )
    for stage in ("instruction", "response_original"):
        reflections.append(_reflection(long_id, stage, "prompt_too_long: 9000 tokens > 8191", ""))
    scores.append(_score(long_id, "ori", LONG_INSTRUCTION, "", "Notes.", 0.9, 0.9))
    store.append("seeds", seeds)
    store.append(
        "rejects",
        [
            {
                "run_id": run_id,
                "source": "view.jsonl",
                "line": 7,
                "reason": "empty output",
                "raw": '{"instruction": "x", "output": ""}',
                "ingested_at": datetime.now(UTC),
            }
        ],
    )
    half = len(seeds) // 2
    ids = [s["source_id"] for s in seeds]
    for shard, part in enumerate((ids[:half], ids[half:])):
        mine = set(part)
        refl = [r for r in reflections if r["source_id"] in mine]
        sc = [s for s in scores if s["source_id"] in mine]
        store.commit_shard(
            "reflections",
            [{"run_id": run_id, "shard": shard, **r} for r in refl],
            run_id=run_id,
            stage="instruction",
            shard=shard,
        )
        store.commit_shard(
            "scores",
            [{"run_id": run_id, "shard": shard, **r} for r in sc],
            run_id=run_id,
            stage="score",
            shard=shard,
        )
        failures = request_failures([ReflectionRow(**r) for r in refl])
        sel = selection_rows(sc, teacher=TEACHER, student=STUDENT, prompt_version="v", failures=failures)
        store.commit_shard(
            "selected",
            [{"run_id": run_id, "shard": shard, **r} for r in sel],
            run_id=run_id,
            stage="select",
            shard=shard,
        )
    # The judge stage judged the first pair: the reflected response won, and its kept variant got 8.
    store.commit_shard("judgements", [{"run_id": run_id, "shard": 0, **JUDGED, "source_id": ids[0]}],
                       run_id=run_id, stage="judge", shard=0)  # fmt: skip
    if finished:
        store.append("runs", [runs_row(run_id, "recycle", len(seeds))])
    else:  # going, as a real run says: a row that says running, and a fresh heartbeat from this process
        going(store, run_id, "recycle")
    _traces(store)
    return store


def going(store: Store, run_id: str, flow: str) -> None:
    import os
    import socket

    from storage.heartbeats import Heartbeats
    from tasks.runs import Heartbeat

    now = datetime.now(UTC)
    store.append("runs", [{"run_id": run_id, "flow": flow, "status": "running", "started_at": now}])
    # This (test) process beats for it: alive on this host, and fresh for a minute, the test's length.
    Heartbeats(store).write(
        Heartbeat(run_id, flow, socket.gethostname(), os.getpid(), now.isoformat(), now.isoformat())
    )


def runs_row(run_id: str, flow: str, n: int) -> dict[str, Any]:
    counts = {
        "run_id": run_id,
        "pairs": n,
        "kept": 1,
        "reasons": {},
        "failures": {"instruction/prompt_too_long": 1},
    }
    return {
        "run_id": run_id,
        "flow": flow,
        "status": "completed",
        "started_at": datetime.now(UTC),
        "ended_at": datetime.now(UTC),
        "config_json": "{}",
        "versions_json": "{}",
        "counts_json": json.dumps(counts),
        "tokens_json": "[]",
        "stage_seconds_json": "{}",
        "cost_json": json.dumps({"total": None, "device_hours": 0.001}),
        "shards_json": "[]",
    }


TRACE_THINKING = (
    "Twelve plus thirty. <reflection>Wait, check the sum: 12 + 30 = 42.</reflection> So it is 42."
)


def _traces(store: Store) -> None:
    row = {
        "run_id": TRACES_RUN,
        "source_id": "trace-one",
        "shard": 0,
        "teacher": TEACHER,
        "prompt_version": "t",
        "question": "Add 12 and 30.",
        "gold": "42",
        "raw_text": f"<thinking>{TRACE_THINKING}</thinking><output>42</output>",
        "thinking": TRACE_THINKING,
        "output": "42",
        "n_reflections": 1,
        "valid": True,
        "invalid_reason": None,
        "verified": True,
        "prompt_tokens": 5,
        "completion_tokens": 20,
        "latency_s": 0.1,
        "finish_reason": "stop",
        "student": STUDENT,
        "ifd_ppl": 0.7,
        "ifd_loss": 0.7,
        "loss_cond": 1.0,
        "loss_direct": 1.0,
        "score_error": None,
        "scoring_version": "scoring/v2",
        "kept": True,
        "reason": "kept",
    }
    store.commit_shard("traces", [row], run_id=TRACES_RUN, stage="trace", shard=0)
    store.append("runs", [runs_row(TRACES_RUN, "traces", 1)])
