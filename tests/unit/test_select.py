"""The reference decision tree, branch by branch."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tasks.recycle.select import VARIANTS, VariantScore, select_variant

NAN = float("nan")


def s(ifd: float, rifd: float) -> VariantScore:
    return VariantScore(ifd, rifd)


def test_reflected_branch_keeps_qa_when_its_rifd_is_lower():
    d = select_variant({"ori": s(0.5, 0.5), "Q": s(0.7, 0.6), "A": s(0.4, 0.1), "QA": s(0.8, 0.5)})
    assert (d.kept, d.variant, d.branch, d.reason) == (True, "QA", "reflected", "kept:QA")


def test_reflected_branch_drops_when_qa_does_not_lower_rifd():
    d = select_variant({"ori": s(0.5, 0.5), "Q": s(0.7, 0.6), "A": s(0.4, 0.1), "QA": s(0.8, 0.6)})
    assert not d.kept and d.reason == "rifd_not_lower:QA>=Q"


def test_original_branch_keeps_a():
    d = select_variant({"ori": s(0.5, 0.5), "Q": s(0.5, 0.1), "A": s(0.6, 0.4), "QA": s(0.1, 0.1)})
    assert (d.kept, d.variant, d.branch) == (True, "A", "original")


def test_bounds_apply_to_the_kept_variant():
    assert select_variant({"ori": s(0.5, 0.9), "A": s(1.0, 0.4)}).reason == "ifd_ge_1"
    assert select_variant({"ori": s(0.5, 1.5), "A": s(0.9, 1.2)}).reason == "rifd_ge_1"


def test_missing_or_unscored_variants_drop_with_a_reason():
    assert select_variant({"ori": s(0.5, 0.5)}).reason == "missing:A"
    assert select_variant({"ori": s(NAN, 0.5), "A": s(0.1, 0.1)}).reason == "unscored:ori"
    assert select_variant({"ori": s(0.5, 0.5), "A": s(0.1, NAN)}).reason == "unscored:A"
    # An unscored Q cannot win the instruction comparison: the original branch is judged.
    d = select_variant({"ori": s(0.5, 0.5), "Q": s(NAN, 0.1), "A": s(0.2, 0.2)})
    assert d.variant == "A" and d.kept


score = st.one_of(st.none(), st.builds(VariantScore, st.floats(0, 3), st.floats(0, 3)))


@given(st.fixed_dictionaries({v: score for v in VARIANTS}))
def test_kept_pairs_always_satisfy_the_bounds(scores):
    d = select_variant(scores)
    if d.kept:
        kept = scores[d.variant]
        assert d.variant in ("QA", "A")
        assert kept.ifd < 1 and kept.rifd < 1
        base = scores["Q"] if d.variant == "QA" else scores["ori"]
        assert kept.rifd < base.rifd
