"""The hf engine's scores against an independent per-sample computation (transformers' own loss)."""

from __future__ import annotations

import math

import pytest
import torch

from infra.engines.hf_engine import HFEngine, HFOptions
from tasks.engine import ScoreRequest
from tasks.scoring.score import PairText, score_pairs, score_responses
from tasks.scoring.tokens import TRUNCATED_AWAY

pytestmark = pytest.mark.slow

PAIRS = [
    PairText("Give three tips for staying healthy.", "Eat well, sleep enough and move every day."),
    PairText("What is the capital of France?", "Paris.", input="Answer in one word."),
    PairText(
        "Write a haiku about the sea.",
        "Waves fold into foam\nsalt wind carries gull voices\nthe tide keeps its time",
    ),
    PairText("Translate 'cat' to French.", "Paris."),  # shares its response with pair 2
]


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    eng = HFEngine(str(tiny_model_path), HFOptions(dtype="float32"))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference_model(tiny_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    return tok, model


def reference_loss(tok, model, context: str, target: str) -> float:
    """Mean cross-entropy of the target's tokens, one sample at a time, with ``labels=``.

    Independent of the engine: context tokens are found by tokenising the context alone, which is
    exact for these texts because every chat prefix ends in a newline or special token. The tiny
    tokenizer declares a BOS but does not add one (like SmolLM2's), so a direct text is its own
    tokens and its first token is not scored.
    """
    assert tok("Hello")["input_ids"] == tok("Hello", add_special_tokens=False)["input_ids"]
    if context:
        ctx_ids = tok(context)["input_ids"]
        full_ids = tok(context + target)["input_ids"]
        assert full_ids[: len(ctx_ids)] == ctx_ids, "the seam merged; pick another text"
    else:
        ctx_ids, full_ids = [], tok(target)["input_ids"]
    ids = torch.tensor([full_ids])
    labels = ids.clone()
    labels[0, : len(ctx_ids)] = -100
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss)


def test_hf_scores_equal_per_sample_reference(engine, reference_model):
    tok, model = reference_model
    scores = score_pairs(PAIRS, engine)
    for pair, s in zip(PAIRS, scores, strict=True):
        assert s.score_error is None
        prefix = engine.tokenizer.chat_prefix(pair.user_message)
        rev_prefix = engine.tokenizer.chat_prefix(
            "Below is the response to an instruction, please guess the corresponding instruction for the "
            f"given response.\n{pair.response}\nGenerate the instruction for the above response."
        )
        assert s.loss_cond == pytest.approx(reference_loss(tok, model, prefix, pair.response), abs=1e-5)
        assert s.loss_direct == pytest.approx(reference_loss(tok, model, "", pair.response), abs=1e-5)
        assert s.rloss_cond == pytest.approx(
            reference_loss(tok, model, rev_prefix, pair.user_message), abs=1e-5
        )
        assert s.rloss_direct == pytest.approx(reference_loss(tok, model, "", pair.user_message), abs=1e-5)
        assert s.ifd.ppl == pytest.approx(math.exp(s.loss_cond - s.loss_direct), rel=1e-9)


def test_batched_equals_one_at_a_time(tiny_model_path, engine):
    padded = HFEngine(
        str(tiny_model_path), HFOptions(dtype="float32", max_pad_fraction=0.9, batch_tokens=4096)
    )
    try:
        a = score_pairs(PAIRS, padded)
    finally:
        padded.close()
    b = score_pairs(PAIRS, engine)
    for x, y in zip(a, b, strict=True):
        assert x.loss_cond == pytest.approx(y.loss_cond, abs=1e-5)
        assert x.rloss_cond == pytest.approx(y.rloss_cond, abs=1e-5)


def test_distinct_direct_texts_are_computed_once(engine):
    before = engine.n_forward_sequences
    score_pairs(PAIRS, engine)
    # 4 pairs x 4 passes = 16, minus the shared direct pass of the response "Paris.".
    assert engine.n_forward_sequences - before == 15


def test_score_responses_is_the_ifd_half_of_score_pairs(engine):
    before = engine.n_forward_sequences
    ifd_only = score_responses(PAIRS, engine)
    # 4 pairs x 2 passes, minus the shared direct pass of "Paris.": no reversed passes run.
    assert engine.n_forward_sequences - before == 7
    for one, full in zip(ifd_only, score_pairs(PAIRS, engine), strict=True):
        assert one.loss_cond == full.loss_cond and one.loss_direct == full.loss_direct
        assert one.ifd.ppl == full.ifd.ppl and one.n_response_tokens == full.n_response_tokens


def test_seam_merge_is_scored_on_exactly_the_target_tokens(engine):
    tok = engine.tokenizer
    text = "The answer is hello world and the capital of France is Paris."
    merges = []
    for seam in range(1, len(text)):
        ids, offsets = tok.encode(text)
        spanning = [i for i, (s, e) in enumerate(offsets) if s < seam < e]
        if spanning:
            merges.append((seam, spanning[0], ids, offsets))
    assert merges, "the tiny tokenizer should merge across some character boundary"
    for seam, merged_idx, ids, offsets in merges:
        context, target = text[:seam], text[seam:]
        plan = tok.plan(ScoreRequest(context, target))
        own = [ids[i] for i, (s, e) in enumerate(offsets) if e > s and e > seam]
        if merged_idx == 0:  # the text's first token has nothing before it: not scored (no BOS here)
            own = own[1:]
            merged_idx = 1
        # Exactly the tokens that overlap the target: the merged one included, nothing before it.
        assert list(plan.target_ids) == own
        assert plan.target_ids[0] == ids[merged_idx]
        # Tokenising the prefix alone would put the boundary elsewhere (the reference's off-by-one).
        assert tok.encode(context)[0] != ids[:merged_idx]


def test_target_truncated_to_nothing_is_nan_with_reason(tiny_model_path):
    eng = HFEngine(str(tiny_model_path), HFOptions(dtype="float32", max_length=1))
    try:
        [s] = score_pairs([PAIRS[0]], eng)
    finally:
        eng.close()
    assert math.isnan(s.ifd.ppl) and math.isnan(s.rifd.ppl)
    assert TRUNCATED_AWAY in (s.score_error or "")


def test_a_conversations_last_answer_is_scored_after_its_history(engine, reference_model):
    """IFD of the last answer: the loss after the system prompt, the earlier turns and the question
    (the model's chat template over every message), over the loss of the answer alone."""
    tok, model = reference_model
    last = ("Another one?", "A pear is another fruit.")
    histories = [
        (("system", "Answer briefly."), ("user", "Name a fruit."), ("assistant", "An apple.")),
        (("user", "Name a red fruit."), ("assistant", "A cherry.")),
    ]
    pairs = [PairText(*last, history=h) for h in histories]
    with_history = score_pairs(pairs, engine)
    [alone] = score_pairs([PairText(*last)], engine)
    for pair, s in zip(pairs, with_history, strict=True):
        assert s.score_error is None
        prefix = engine.tokenizer.chat_prefix((*pair.history, ("user", pair.instruction)))
        assert prefix.index("Name a") < prefix.index("Another one?")  # the history is in the context
        assert s.loss_cond == pytest.approx(reference_loss(tok, model, prefix, pair.response), abs=1e-5)
        reversed_question = (
            "Below is the response to an instruction, please guess the corresponding instruction for the "
            f"given response.\n{pair.response}\nGenerate the instruction for the above response."
        )
        reversed_prefix = engine.tokenizer.chat_prefix((*pair.history, ("user", reversed_question)))
        assert s.rloss_cond == pytest.approx(
            reference_loss(tok, model, reversed_prefix, pair.instruction), abs=1e-5
        )
    # What is scored alone does not see the history; what is scored after it does.
    assert with_history[0].loss_direct == with_history[1].loss_direct == alone.loss_direct
    assert with_history[0].rloss_direct == with_history[1].rloss_direct == alone.rloss_direct
    assert len({with_history[0].loss_cond, with_history[1].loss_cond, alone.loss_cond}) == 3


def test_the_score_command_scores_every_assistant_turn_with_turns_each(tiny_model_path, engine, tmp_path):
    import json

    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from flows.cli import app

    turns = [("system", "Be kind."), ("user", "Hi there."), ("assistant", "Hello, how can I help?"),
             ("user", "Name a fruit."), ("assistant", "An apple."), ("user", "Another?"),
             ("assistant", "A pear.")]  # fmt: skip
    rows = [
        {"messages": [{"role": r, "content": c} for r, c in turns]},
        {"instruction": "Give three tips for staying healthy.", "output": "Eat well, sleep, move."},
    ]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    args = ["score", "-i", str(src), "-o", str(out), "--student", f"hf:{tiny_model_path}", "--turns", "each"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    convo, single = pq.read_table(out).to_pylist()
    assert [t["turn"] for t in convo["turn_scores"]] == [1, 2, 3] and len(single["turn_scores"]) == 1
    # The last turn is the row's own exchange; each earlier one is scored after the messages before it.
    assert convo["turn_scores"][-1]["loss_cond"] == pytest.approx(convo["loss_cond"])
    [second] = score_pairs([PairText("Name a fruit.", "An apple.", history=tuple(turns[:3]))], engine)
    assert convo["turn_scores"][1]["loss_cond"] == pytest.approx(second.loss_cond, abs=1e-5)
    assert convo["turn_scores"][1]["ifd_ppl"] == pytest.approx(second.ifd.ppl, abs=1e-5)
    assert single["turn_scores"][0]["ifd_ppl"] == pytest.approx(single["ifd_ppl"])
