"""The BOS rule on three kinds of real (tiny, built here) Hugging Face tokenizers.

A text gets exactly the special tokens the tokenizer itself adds with default settings: a BOS where
``tokenizer(text)`` starts with one (Llama 2 and 3), none where a BOS is only declared (SmolLM2
declares ``<|im_start|>`` and never adds it) or where there is none; never a doubled one.
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from infra.engines.tokenizer import TextTokenizer
from tasks.engine import ScoreRequest

WORDS = ["Hello", "world", "USER", ":", "ASSISTANT", "Paris", "is", "the", "capital", "of", "France", "."]
SPECIAL = ["<s>", "</s>", "<unk>", "<|im_start|>"]


def tokenizer(kind: str) -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    kwargs: dict[str, str] = {"eos_token": "</s>", "unk_token": "<unk>"}
    if kind == "adds_bos":  # Llama-style: the post-processor puts <s> in front of every text
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
        kwargs["bos_token"] = "<s>"
    elif kind == "declares_bos":  # SmolLM2-style: a BOS is declared but never added
        kwargs["bos_token"] = "<|im_start|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def text_tokenizer(kind: str) -> TextTokenizer:
    return TextTokenizer(tokenizer(kind), chat_template="vicuna")


def test_the_three_kinds_behave_as_their_models_do():
    assert tokenizer("adds_bos")("Hello world")["input_ids"][0] == 0
    declares = tokenizer("declares_bos")
    assert declares.bos_token_id is not None
    assert declares.bos_token_id not in declares("Hello world")["input_ids"]
    assert tokenizer("none").bos_token_id is None


def test_a_tokenizer_that_adds_a_bos_gets_it_on_every_text_and_every_target_token_is_scored():
    tt = text_tokenizer("adds_bos")
    direct = tt.plan(ScoreRequest("", "Paris is the capital"))
    assert direct.input_ids[0] == 0 and direct.input_ids.count(0) == 1
    assert direct.n_target == 4  # predicted from the BOS onwards
    cond = tt.plan(ScoreRequest("USER : Hello ASSISTANT :", " Paris is the capital"))
    assert cond.input_ids[0] == 0 and cond.input_ids.count(0) == 1
    assert cond.n_target == 4


@pytest.mark.parametrize("kind", ["declares_bos", "none"])
def test_a_declared_but_unused_bos_or_none_adds_nothing_and_the_first_direct_token_is_not_scored(kind):
    tt = text_tokenizer(kind)
    declared = tokenizer(kind).bos_token_id
    direct = tt.plan(ScoreRequest("", "Paris is the capital"))
    assert declared is None or declared not in direct.input_ids
    assert len(direct.input_ids) == 4
    assert direct.n_target == 3 and direct.error is None  # the first token has nothing before it
    cond = tt.plan(ScoreRequest("USER : Hello ASSISTANT :", " Paris is the capital"))
    assert len(cond.input_ids) == 9 and cond.n_target == 4


def test_a_text_that_already_starts_with_the_bos_does_not_get_a_second_one():
    tt = text_tokenizer("adds_bos")
    plan = tt.plan(ScoreRequest("<s> USER : Hello ASSISTANT :", " Paris"))
    assert plan.input_ids.count(0) == 1


def test_a_single_token_direct_text_without_bos_is_nan_with_a_reason_not_zero():
    from tasks.scoring.tokens import NO_CONTEXT_TOKEN

    assert text_tokenizer("declares_bos").plan(ScoreRequest("", "Paris")).error == NO_CONTEXT_TOKEN
    assert text_tokenizer("adds_bos").plan(ScoreRequest("", "Paris")).n_target == 1


def test_generation_prompts_get_the_same_prefix():
    assert text_tokenizer("adds_bos").prompt_ids("Hello world")[0] == 0
    assert 0 not in text_tokenizer("none").prompt_ids("Hello world")
