"""RAG metrics on hand-computed cases; unscorable inputs give None and a reason, never NaN."""

from __future__ import annotations

import math

import pytest

from llm_ladder.rag.rag_metrics import (
    answer_support,
    citation_validity,
    citations,
    content_words,
    mean,
    mrr,
    ndcg_at_k,
    recall_at_k,
)


def test_recall_at_k() -> None:
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, {"b", "d", "e"}, k=2).value == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {"b", "d", "e"}, k=4).value == pytest.approx(2 / 3)
    assert recall_at_k(ranked, ["z"], k=4).value == 0.0
    assert recall_at_k([], ["z"], k=4).value == 0.0
    # Chunks of one document repeat its id: it counts once, so "b" is at rank 2 here.
    assert recall_at_k(["a", "a", "a", "b"], ["b"], k=2).value == 1.0
    assert recall_at_k(ranked, ["b"], k=10).details["found"] == ["b"]


def test_mrr() -> None:
    assert mrr(["x", "y", "b", "b"], {"b"}).value == pytest.approx(1 / 3)
    assert mrr(["b"], {"a", "b"}).value == 1.0
    assert mrr(["x", "x", "y", "b"], {"b"}).value == pytest.approx(1 / 3)
    none = mrr(["x", "y"], {"b"})
    assert none.value == 0.0 and none.details["first_rank"] is None


def test_ndcg_at_10() -> None:
    # gold at ranks 2 and 3: (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3))
    value = ndcg_at_k(["a", "b", "c"], {"b", "c"}).value
    assert value == pytest.approx((1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3)))
    assert value == pytest.approx(0.693426, abs=1e-6)
    assert ndcg_at_k(["b", "c", "a"], {"b", "c"}).value == pytest.approx(1.0)
    assert ndcg_at_k([f"x{i}" for i in range(10)] + ["g"], {"g"}).value == 0.0  # rank 11
    assert ndcg_at_k([f"x{i}" for i in range(9)] + ["g"], {"g"}).value == \
        pytest.approx(1 / math.log2(11))
    # More gold than k: the ideal is k hits, so a perfect top-k scores 1.
    gold = {f"g{i}" for i in range(12)}
    assert ndcg_at_k(sorted(gold), gold, k=10).value == pytest.approx(1.0)


@pytest.mark.parametrize("score", [
    recall_at_k(["a"], []), mrr(["a"], set()), ndcg_at_k(["a"], [""]),
    recall_at_k(["a"], ["a"], k=0), ndcg_at_k(["a"], ["a"], k=0),
])
def test_unscorable_retrieval_gives_a_reason(score) -> None:
    assert score.value is None and score.reason


def test_citation_validity() -> None:
    answer = "Roofs need a pitch [1]. Walls carry loads [2, 5]. Again [1][3]."
    assert citations(answer) == [1, 2, 5, 3]
    score = citation_validity(answer, 3)
    assert score.value == pytest.approx(3 / 4)
    assert score.details == {"cited": [1, 2, 5, 3], "invalid": [5]}
    assert citation_validity(answer, {1, 2, 3, 5}).value == 1.0
    assert citation_validity("[0] is never a passage", 3).details["invalid"] == [0]
    nothing = citation_validity("No citations here.", 3)
    assert nothing.value is None and nothing.reason == "the answer cites nothing"


PASSAGES = ["The building permit costs 200 euros and takes ten weeks to process.",
            "Dogs must be kept on a leash in city parks."]


def test_answer_support_by_hand() -> None:
    answer = ("The permit costs 200 euros [1]. It takes ten weeks. "
              "Cats can fly over the moon [2].")
    score = answer_support(answer, PASSAGES)
    # 1: {permit, cost, 200, euro} all in [1]; 2: uncited, {take, ten, week} in the answer's
    # cited passages; 3: {cat, can, fly, over, moon} minus stopwords -> none in [2].
    assert score.value == pytest.approx(2 / 3)
    assert score.details["unsupported"] == ["Cats can fly over the moon [2]."]
    assert [s["cites"] for s in score.details["sentences"]] == [[1], [1, 2], [2]]
    half = answer_support("Permit for dogs needs unicorns [1].", PASSAGES)
    # {permit, dog, need, unicorn}: only "permit" is in [1] (1/4 < 0.5) -> unsupported
    assert half.value == 0.0
    at_threshold = answer_support("Permit for unicorns [1].", PASSAGES)  # 1 of 2 words
    assert at_threshold.details["sentences"][0]["share"] == 0.5
    assert at_threshold.value == 1.0
    assert answer_support("Permit dogs [1][2].", PASSAGES).value == 1.0  # both cited
    assert answer_support("Permit costs [3].", {3: PASSAGES[0]}).value == 1.0


def test_answer_support_unscorable() -> None:
    assert answer_support("The permit costs 200 euros.", PASSAGES).value is None
    invalid = answer_support("The permit costs 200 euros [9].", PASSAGES)
    assert invalid.value is None and "cites none" in invalid.reason
    empty = answer_support("It is [1]. Was it? [1]", PASSAGES)
    assert empty.value is None and empty.reason == "the answer has no content words"
    assert content_words("The [1] permits, it's 5 e4") == {"permit", "5", "e4"}


def test_mean_skips_unscored() -> None:
    scores = [recall_at_k(["a"], ["a"]), recall_at_k(["a"], ["b"]), recall_at_k(["a"], [])]
    m = mean(scores)
    assert m.value == 0.5 and m.details == {"scored": 2, "unscored": 1}
    assert mean([recall_at_k(["a"], [])]).value is None
    assert mean([]).value is None
