"""The recycle flow's judge stage, pure: what it asks, and one ``judgements`` row per pair.

Per pair, the reflected response (variant A, y0') against the original one (ori, y0) to the same
instruction, in both orders: A's outcome says whether reflection helped the response. Per kept pair,
the kept variant's rating from 1 to 10. A pair whose response was not reflected has no A: its row is
``failed`` with the reason, and still carries the kept variant's rating when one was kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tasks.engine import Generator, Sampling
from tasks.judge.protocol import PAIR_PROMPT, pair_form, prompt_version, question_text
from tasks.judge.stages import AnswerItem, PairItem, failed_pair, judge_pairs, rate_answers

NO_REFLECTED_RESPONSE = "no_reflected_response"


def judgements(
    seeds: Sequence[Any],
    reflected: Mapping[str, str | None],
    kept: Mapping[str, Mapping[str, Any]],
    judge: Generator,
    sampling: Sampling,
    *,
    constrained: bool = True,
) -> list[dict[str, Any]]:
    """One row per seed, in seed order.

    ``seeds``: pairs with ``id``, ``instruction``, ``input``, ``output``; ``reflected``: each seed's
    better answer to its own instruction (None, or absent, when that reply failed); ``kept``: the
    ``selected`` row of each kept seed (``variant``, ``instruction``, ``input``, ``output``). A seed
    with a ``history`` (a conversation's last exchange) is judged after it.
    """
    version = prompt_version(PAIR_PROMPT, pair_form(sampling, constrained))
    history = {s.id: getattr(s, "history", ()) for s in seeds}
    todo, rows = [], {}
    for s in seeds:
        question = question_text(s.instruction, s.input, history[s.id])
        item = PairItem(s.id, question, reflected.get(s.id) or "", s.output)
        if reflected.get(s.id):
            todo.append(item)
        else:
            rows[s.id] = failed_pair(item, judge.spec, version, NO_REFLECTED_RESPONSE)
    rows.update({r["source_id"]: r for r in judge_pairs(todo, judge, sampling, constrained=constrained)})
    rated = rate_answers(
        [
            AnswerItem(i, question_text(k["instruction"], k["input"] or "", history.get(i, ())), k["output"])
            for i, k in kept.items()
        ],
        judge,
        sampling,
        constrained=constrained,
    )
    for r in rated:
        row = rows[r["source_id"]]
        row["kept_variant"] = kept[r["source_id"]]["variant"]
        row["prompt_tokens"] += r.pop("rating_prompt_tokens")
        row["completion_tokens"] += r.pop("rating_completion_tokens")
        row["latency_s"] += r.pop("rating_latency_s")
        rating_from = r.pop("rating_reply_from")
        row["reply_from"] = row.get("reply_from") if rating_from else None
        row.update(r)
    return [rows[s.id] for s in seeds]


def rating_histogram(ratings: Iterable[float | None]) -> dict[int, int]:
    """Ratings 1-10 counted by their whole part (7.5 counts as 7); missing ones left out."""
    out = dict.fromkeys(range(1, 11), 0)
    for r in ratings:
        if r is not None:
            out[min(10, max(1, int(r)))] += 1
    return out
