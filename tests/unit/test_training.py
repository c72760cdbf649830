"""Training settings and examples (pure): the papers' defaults, the batch by accumulation, prompts as
scoring renders them, and the key that finds a finished training again."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tasks.ingest.records import make_pair
from tasks.scoring.templates import prompt_format
from tasks.training.examples import train_examples, training_key
from tasks.training.settings import FULL_LR, LORA_LR, TrainSettings


def test_the_papers_defaults_and_a_learning_rate_for_each_method():
    s = TrainSettings()
    assert (s.epochs, s.max_length, s.batch_size, s.full) == (3.0, 2048, 128, False)
    assert s.lr == LORA_LR and TrainSettings(full=True).lr == FULL_LR == 2e-5
    assert TrainSettings(learning_rate=1e-3).lr == 1e-3
    with pytest.raises(ValidationError, match="micro_batch 8 is larger than batch_size 4"):
        TrainSettings(batch_size=4, micro_batch=8)


def test_the_effective_batch_comes_from_accumulation():
    s = TrainSettings(batch_size=128, micro_batch=4, epochs=3)
    assert s.accumulation(10_000) == 32 and s.accumulation(10_000, devices=8) == 4
    assert s.steps(1280) == 30  # 10 steps an epoch
    assert s.accumulation(10) == 3 and s.steps(10) == 3  # a dataset smaller than a batch: one step an epoch
    record = s.record(1280)
    assert (
        record["gradient_accumulation"] == 32
        and record["method"] == "lora"
        and record["learning_rate"] == LORA_LR
    )


def test_examples_are_rendered_as_scoring_renders_them_after_the_history():
    fmt = prompt_format("vicuna")
    single = make_pair("Name a fruit.", "", "Apple.", 1)
    convo = make_pair("Another?", "", "Pear.", 2, (("user", "Name a fruit."), ("assistant", "Apple."),
                                                   ("user", "Another?"), ("assistant", "Pear.")))  # fmt: skip
    one, two = train_examples([single, convo], fmt)
    assert one.prompt == fmt.prompt("Name a fruit.", "", ()) and one.completion == "Apple."
    assert two.prompt.endswith("USER: Name a fruit. ASSISTANT: Apple.</s>USER: Another? ASSISTANT:")
    assert two.completion == "Pear."


def test_the_training_key_changes_with_the_base_the_examples_and_the_settings():
    examples = train_examples([make_pair("Name a fruit.", "", "Apple.", 1)], prompt_format("alpaca"))
    key = training_key("hf:a", examples, TrainSettings().model_dump())
    assert key == training_key("hf:a", examples, TrainSettings().model_dump())
    assert key != training_key("hf:b", examples, TrainSettings().model_dump())
    assert key != training_key("hf:a", examples, TrainSettings(seed=1).model_dump())
    assert key != training_key("hf:a", examples * 2, TrainSettings().model_dump())


def test_arms_lose_their_test_set_rows_then_meet_at_the_smaller_size():
    from tasks.training.arms import decontaminated, equal_size

    pairs = [make_pair(f"Question {i}.", "", f"Answer {i}.", i) for i in range(6)]
    convo = make_pair("Go on.", "", "Done.", 7, (("user", "LEAKED test question"), ("assistant", "x"),
                                                  ("user", "Go on."), ("assistant", "Done.")))  # fmt: skip
    a = decontaminated("a", [*pairs[:3], convo], lambda text: "LEAKED" in text)  # the history counts too
    b = decontaminated("b", pairs, lambda text: False)
    assert (len(a.pairs), a.read, a.contaminated) == (3, 4, 1)
    a2, b2 = equal_size(a, b, seed=0)
    assert a2 == a and len(b2.pairs) == 3 and b2.sampled_out == 3
    assert [p.source_line for p in b2.pairs] == sorted(p.source_line for p in b2.pairs)  # its own order
    assert equal_size(a, b, seed=0)[1] == b2 and equal_size(a, b, seed=1)[1].pairs != b2.pairs


def test_the_winning_score_interval_is_a_seeded_bootstrap_over_judged_items():
    from tasks.judge.verdict import Tally, winning_score_interval

    outcomes = ["win"] * 30 + ["tie"] * 10 + ["loss"] * 20 + ["failed"] * 5
    low, high = winning_score_interval(outcomes)  # type: ignore[misc]
    point = Tally.of(outcomes).winning_score
    assert point is not None and low < point < high and low >= 0 and high <= 2
    assert winning_score_interval(outcomes) == (low, high)  # seeded
    assert winning_score_interval(["failed"]) is None
    assert winning_score_interval(["win"]) == (2.0, 2.0)
