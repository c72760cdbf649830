"""Token planning: the target is found by character offsets of the full text, once."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from tasks.scoring.tokens import EMPTY_TARGET, NO_CONTEXT_TOKEN, TRUNCATED_AWAY, SpecialTokens, plan_target

BOS, EOS = 1, 2
ADDS_BOS = SpecialTokens(prefix=(BOS,))
NONE = SpecialTokens()


def word_encoder(text: str):
    """A toy tokenizer: each run of non-space characters (with its leading spaces) is one token."""
    ids, offsets = [], []
    for m in re.finditer(r"\s*\S+|\s+$", text):
        ids.append(100 + len(ids))
        offsets.append((m.start(), m.end()))
    return ids, offsets


def test_target_tokens_are_those_overlapping_the_target_span():
    plan = plan_target(word_encoder, "Q: add", " two numbers", specials=NONE, max_length=64)
    # "Q:", " add" are context; " two", " numbers" are target.
    assert plan.first_target == 2
    assert plan.n_target == 2
    assert plan.n_context_tokens == 2


def test_token_merging_across_the_seam_belongs_to_the_target():
    # "ab" + "cd": the toy tokenizer merges the seam into one token "abcd" with no prior token.
    plan = plan_target(word_encoder, "x ab", "cd e", specials=NONE, max_length=64)
    # tokens: "x", " abcd", " e" -> " abcd" overlaps the target, so it is scored, from "x".
    assert plan.first_target == 1
    assert plan.n_target == 2


def test_direct_pass_gets_a_bos_and_scores_every_target_token():
    plan = plan_target(word_encoder, "", "one two", specials=ADDS_BOS, max_length=64)
    assert plan.input_ids[0] == BOS
    assert plan.first_target == 1
    assert plan.n_target == 2


def test_bos_is_not_doubled_when_the_text_already_starts_with_it():
    def enc(text):  # a rendered template that begins with the BOS token itself
        ids, offs = word_encoder(text)
        return [BOS, *ids], [(0, 0), *offs]

    plan = plan_target(enc, "ctx", " tgt", specials=ADDS_BOS, max_length=64)
    assert plan.input_ids.count(BOS) == 1


def test_an_appended_eos_is_part_of_the_target_as_in_the_reference():
    plan = plan_target(word_encoder, "ctx", " a b", specials=SpecialTokens(suffix=(EOS,)), max_length=64)
    assert plan.input_ids[-1] == EOS
    assert plan.n_target == 3  # " a", " b" and the EOS the tokenizer appends


def test_specials_are_read_off_a_probe():
    assert SpecialTokens.from_probe([BOS, 7, 8], [7, 8]) == ADDS_BOS
    assert SpecialTokens.from_probe([7, 8], [7, 8]) == NONE
    assert SpecialTokens.from_probe([BOS, 7, 8, EOS], [7, 8]) == SpecialTokens((BOS,), (EOS,))


def test_without_bos_the_first_direct_token_is_not_scored():
    plan = plan_target(word_encoder, "", "one two three", specials=NONE, max_length=64)
    assert plan.n_target == 2
    assert plan.error is None


def test_single_token_without_bos_cannot_be_scored():
    plan = plan_target(word_encoder, "", "one", specials=NONE, max_length=64)
    assert plan.error == NO_CONTEXT_TOKEN


def test_empty_target_gets_a_reason():
    assert plan_target(word_encoder, "ctx", "", specials=ADDS_BOS, max_length=64).error == EMPTY_TARGET


def test_a_long_text_keeps_its_first_tokens_as_the_reference_cuts_it():
    ctx = " ".join(f"c{i}" for i in range(3))
    plan = plan_target(word_encoder, ctx, " t1 t2 t3 t4 t5", specials=ADDS_BOS, max_length=6)
    assert len(plan.input_ids) == 6  # BOS c0 c1 c2 t1 t2: the end of the target goes
    assert plan.truncated
    assert plan.n_target == 2
    assert plan.n_target_dropped == 3


def test_a_context_that_fills_the_window_leaves_nan_with_a_reason_not_a_zero():
    ctx = " ".join(f"c{i}" for i in range(20))
    plan = plan_target(word_encoder, ctx, " t1 t2 t3", specials=ADDS_BOS, max_length=6)
    assert plan.error == TRUNCATED_AWAY
    assert plan.n_target == 0 and plan.truncated and plan.n_target_dropped == 3


def test_target_truncated_to_nothing_is_an_error_not_a_zero():
    plan = plan_target(word_encoder, "ctx", " t1 t2", specials=ADDS_BOS, max_length=1)
    assert plan.error == TRUNCATED_AWAY
    assert plan.n_target == 0


def test_a_direct_text_longer_than_the_window_keeps_its_head_and_says_so():
    plan = plan_target(word_encoder, "", " ".join(f"t{i}" for i in range(10)), specials=NONE, max_length=5)
    assert plan.truncated
    assert plan.target_ids == plan.input_ids[1:5]  # the first token has nothing before it
    assert plan.n_target_dropped == 6


words = st.lists(st.text(alphabet="abcdef", min_size=1, max_size=5), min_size=1, max_size=12)


@given(words, words, st.integers(min_value=1, max_value=40))
def test_plan_invariants(ctx_words, tgt_words, max_length):
    ctx, tgt = " ".join(ctx_words), " " + " ".join(tgt_words)
    plan = plan_target(word_encoder, ctx, tgt, specials=ADDS_BOS, max_length=max_length)
    assert len(plan.input_ids) <= max_length
    if plan.error is None:
        assert 1 <= plan.first_target < len(plan.input_ids)
        assert plan.n_target + plan.n_target_dropped == len(tgt_words)
    else:
        assert plan.n_target == 0
