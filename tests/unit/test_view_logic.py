"""The browser's pure parts: the word diff, literal search patterns, and filter validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flows.view.diff import changed_fraction, word_diff
from storage.browse import PairFilter, like

texts = st.text(alphabet=st.sampled_from("ab c\n."), max_size=40)


@given(texts, texts)
def test_the_diff_gives_back_both_texts(old: str, new: str) -> None:
    segments = word_diff(old, new)
    assert "".join(s.text for s in segments if s.op != "ins") == old
    assert "".join(s.text for s in segments if s.op != "del") == new


def test_the_diff_marks_changed_words() -> None:
    segments = word_diff("Compose a poem about cats.", "Compose a haiku about cats.")
    assert [(s.op, s.text) for s in segments if s.op != "same"] == [("del", "poem "), ("ins", "haiku ")]
    assert changed_fraction("a b c d", "a b c d") == 0.0
    assert 0 < changed_fraction("a b c d", "a b x d") < 1


def test_search_words_match_literally() -> None:
    assert like("100%") == "%100\\%%"
    assert like("a_b") == "%a\\_b%"
    assert like("back\\slash") == "%back\\\\slash%"


@pytest.mark.parametrize(
    "bad",
    [{"kept": "maybe"}, {"sort": "ifd; DROP TABLE x"}, {"ifd_min": "inf"}, {"per_page": 0}, {"extra": 1},
     {"q": "x" * 501}],
)  # fmt: skip
def test_bad_filters_do_not_validate(bad: dict) -> None:
    with pytest.raises(ValidationError):
        PairFilter(**bad)


def test_blank_values_are_no_filter() -> None:
    f = PairFilter(q="  ", reason="")
    assert f.q is None and f.reason is None
