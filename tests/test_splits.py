"""Deterministic hash splits, the test cap, and train-test leakage detection."""

from __future__ import annotations

import random

from llm_ladder.data import Example
from llm_ladder.splits import (
    Splits,
    decontaminate,
    find_leaks,
    normalize_text,
    split_examples,
)


def ex(i: str, text: str | None = None) -> Example:
    return Example(i, text if text is not None else f"question number {i}", f"answer {i}")


def many(n: int, prefix: str = "ex") -> list[Example]:
    return [ex(f"{prefix}-{i:04d}") for i in range(n)]


def where(splits: Splits) -> dict[str, str]:
    return {i: name for name, ids in splits.ids().items() for i in ids}


# ---- splits -----------------------------------------------------------------------------

def test_split_is_deterministic_and_order_independent():
    data = many(300)
    a = split_examples(data, 0.6, 0.1, 0.3, seed=3)
    shuffled = data[:]
    random.Random(1).shuffle(shuffled)
    b = split_examples(shuffled, 0.6, 0.1, 0.3, seed=3)
    assert a.ids() == b.ids()
    assert a.capped_test == 0
    ids = a.ids()
    assert sorted(ids["train"] + ids["dev"] + ids["test"]) == [e.id for e in data]
    assert all(v == sorted(v) for v in ids.values())


def test_split_sizes_follow_the_fractions():
    s = split_examples(many(2000), 0.6, 0.1, 0.3, seed=0)
    assert 1100 <= len(s.train) <= 1300
    assert 140 <= len(s.dev) <= 260
    assert 500 <= len(s.test) <= 700
    assert len(s.train) + len(s.dev) + len(s.test) == 2000


def test_split_changes_with_the_seed():
    data = many(300)
    a = where(split_examples(data, 0.6, 0.1, 0.3, seed=0))
    b = where(split_examples(data, 0.6, 0.1, 0.3, seed=1))
    moved = sum(a[i] != b[i] for i in a)
    assert moved > 50


def test_adding_examples_never_moves_existing_ones():
    old = many(200)
    before = where(split_examples(old, 0.7, 0.1, 0.2, seed=5))
    after = where(split_examples(old + many(300, "new"), 0.7, 0.1, 0.2, seed=5))
    assert {i: after[i] for i in before} == before
    assert sum(1 for i in after if i.startswith("new")) == 300


def test_zero_fraction_gives_empty_split():
    s = split_examples(many(100), 0.8, 0.0, 0.2, seed=0)
    assert s.dev == []
    assert len(s.train) + len(s.test) == 100


def test_explicit_test_examples_are_kept_whole():
    data = many(100)
    test = [ex("t-2"), ex("t-0"), ex("t-1")]
    s = split_examples(data, 0.6, 0.1, 0.3, seed=0, test_examples=test)
    assert [e.id for e in s.test] == ["t-0", "t-1", "t-2"]
    assert sorted(e.id for e in s.train + s.dev) == [e.id for e in data]
    # train:dev keeps its 6:1 ratio over everything that is not test
    assert 75 <= len(s.train) <= 95
    assert s.capped_test == 0
    only_train = split_examples(data, 0.7, 0.0, 0.3, seed=0, test_examples=test)
    assert len(only_train.train) == 100 and only_train.dev == []


def test_max_test_caps_deterministically():
    data = many(400)
    full = split_examples(data, 0.6, 0.1, 0.3, seed=2)
    a = split_examples(data, 0.6, 0.1, 0.3, seed=2, max_test=25)
    b = split_examples(list(reversed(data)), 0.6, 0.1, 0.3, seed=2, max_test=25)
    assert len(a.test) == 25
    assert a.capped_test == len(full.test) - 25
    assert a.capped_test > 50
    assert a.ids() == b.ids()
    assert {e.id for e in a.test} < {e.id for e in full.test}
    # capped examples are dropped, never moved into train or dev
    assert a.ids()["train"] == full.ids()["train"]
    assert a.ids()["dev"] == full.ids()["dev"]
    capped = {e.id for e in full.test} - {e.id for e in a.test}
    assert not capped & {e.id for e in a.train + a.dev}


def test_max_test_caps_explicit_test_examples_and_is_noop_when_large():
    test = many(30, "t")
    s = split_examples(many(50), 0.9, 0.1, 0.0, seed=0, test_examples=test, max_test=10)
    assert len(s.test) == 10 and s.capped_test == 20
    assert len(s.train) + len(s.dev) == 50
    big = split_examples(many(50), 0.6, 0.1, 0.3, seed=0, max_test=1000)
    assert big.capped_test == 0
    assert big.ids() == split_examples(many(50), 0.6, 0.1, 0.3, seed=0).ids()


# ---- leakage ----------------------------------------------------------------------------

SENTENCE = ("The contractor must finish the kitchen renovation before the end of March "
            "and send the final invoice to the owner")
NEAR = ("The contractor must finish the kitchen renovation before the end of May "
        "and send the final invoice to the owners")
SPAN = "the quick brown fox jumps over the lazy dog while the farmer sleeps in his chair"
WITH_SPAN_1 = f"Our garden has roses and tulips. {SPAN}. Nothing else to add about the weather."
WITH_SPAN_2 = (f"A different preface about taxes and deductions for homeowners in Sweden: {SPAN}! "
               "And then we discuss roofing materials at length.")
UNRELATED_TRAIN = "Cooking pasta with garlic and olive oil takes about twelve minutes tonight"
UNRELATED_TEST = "Roofing tiles must be inspected every ten years by a certified inspector"


def test_normalize_text():
    assert normalize_text("  Hello,\tWORLD!! ﬁne ") == "hello world fine"
    assert normalize_text("rut-avdrag") == "rut avdrag"


def test_leak_kinds_are_found():
    assert len(SENTENCE.split()) == 20
    train = [ex("tr-exact", "Hello, WORLD!   How are you"), ex("tr-near", NEAR),
             ex("tr-gram", WITH_SPAN_2), ex("tr-none", UNRELATED_TRAIN)]
    test = [ex("te-exact", "hello world -- how are you?"), ex("te-near", SENTENCE),
            ex("te-gram", WITH_SPAN_1), ex("te-none", UNRELATED_TEST)]
    leaks = find_leaks(train, test)
    assert [(lk.train_id, lk.test_id, lk.kind) for lk in leaks] == [
        ("tr-exact", "te-exact", "exact"), ("tr-near", "te-near", "near"),
        ("tr-gram", "te-gram", "13-gram")]
    assert leaks[0].detail == ""
    assert leaks[1].detail.startswith("Jaccard 0.")
    assert float(leaks[1].detail.split()[1]) >= 0.8
    gram = leaks[2].detail.split()
    assert len(gram) == 13
    assert leaks[2].detail in normalize_text(SPAN)


def test_chat_inputs_are_compared_as_text():
    msgs = [{"role": "user", "content": SENTENCE}]
    leaks = find_leaks([Example("tr", msgs, "x")], [Example("te", list(msgs), "y")])
    assert [(lk.train_id, lk.test_id, lk.kind) for lk in leaks] == [("tr", "te", "exact")]


def test_unrelated_texts_are_not_flagged():
    train = [ex(f"tr-{i}", f"Question {i}: how do I apply for a building permit in zone {i}?")
             for i in range(5)] + [ex("tr-u", UNRELATED_TRAIN)]
    test = [ex("te-u", UNRELATED_TEST), ex("te-short", SPAN[:40]),
            ex("te-s", "What is the deadline for filing a complaint about hidden defects?")]
    assert find_leaks(train, test) == []


def test_twelve_shared_words_are_not_a_13_gram():
    twelve = " ".join(SPAN.split()[:12])
    a = f"Completely separate opening words about sailing boats. {twelve}. Then goodbye."
    b = f"Another intro regarding mortgage interest deductions! {twelve}; final remark here."
    assert find_leaks([ex("tr", a)], [ex("te", b)]) == []


def test_decontaminate_removes_only_train_and_dev():
    train = [ex("tr-keep", UNRELATED_TRAIN), ex("tr-dup", "Hello world"), ex("tr-near", NEAR)]
    dev = [ex("dv-keep", "Completely fine dev question about windows"),
           ex("dv-gram", WITH_SPAN_2)]
    test = [ex("te-1", "hello, world!"), ex("te-2", SENTENCE), ex("te-3", WITH_SPAN_1),
            ex("te-4", UNRELATED_TEST)]
    before = list(test)
    out = decontaminate(Splits(train, dev, test, capped_test=4))
    assert [e.id for e in out.train] == ["tr-keep"]
    assert [e.id for e in out.dev] == ["dv-keep"]
    assert out.test == before
    assert [e.id for e in out.test] == ["te-1", "te-2", "te-3", "te-4"]
    assert out.capped_test == 4
    report = out.leakage
    assert report is not None
    assert (report.removed_train, report.removed_dev) == (2, 1)
    assert report.counts() == {"exact": 1, "near": 1, "13-gram": 1}


def test_templated_texts_are_near_duplicates():
    leaks = find_leaks([ex("a", "question number ex-0001")], [ex("b", "question number ex-0002")])
    assert [(lk.train_id, lk.test_id, lk.kind) for lk in leaks] == [("a", "b", "near")]


def random_text(rng: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return " ".join("".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(15))


def test_decontaminate_without_leaks_keeps_everything():
    rng = random.Random(0)
    data = [ex(f"r-{i:03d}", random_text(rng)) for i in range(60)]
    s = split_examples(data, 0.6, 0.1, 0.3, seed=0)
    out = decontaminate(s)
    assert out.ids() == s.ids()
    assert out.leakage is not None
    assert out.leakage.leaks == [] and out.leakage.counts() == {}
    assert (out.leakage.removed_train, out.leakage.removed_dev) == (0, 0)
