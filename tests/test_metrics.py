"""Metrics on hand-computed cases, JSON parsing and matching, and bootstrap intervals."""

from __future__ import annotations

import math

import pytest

from llm_ladder.metrics import (
    ExactMatch,
    JsonMatch,
    JsonValid,
    LabelAccuracy,
    MacroF1,
    NormalizedMatch,
    Score,
    TokenF1,
    build_metric,
    match_label,
    parse_json,
    values_equal,
)
from llm_ladder.stats import Interval, bootstrap_mean, bootstrap_stat, percentile

# ---- string matches ---------------------------------------------------------------------

def test_exact_match():
    m = ExactMatch()
    assert m.score("  Paris\n", "Paris") == Score(1.0)
    assert m.score("paris", "Paris").value == 0.0
    assert m.score("Paris.", "Paris").value == 0.0


def test_normalized_match():
    m = NormalizedMatch()
    assert m.score("  PARIS!! ", "paris").value == 1.0
    assert m.score("Hello,   World", "hello world").value == 1.0
    assert m.score("Paris, France", "Paris").value == 0.0


# ---- labels -----------------------------------------------------------------------------

def test_match_label_exact_and_embedded():
    labels = ["yes", "no"]
    assert match_label("Yes.", labels) == "yes"
    assert match_label("  NO ", labels) == "no"
    assert match_label("The answer is no, definitely.", labels) == "no"
    assert match_label("I think yes or no", labels) is None
    assert match_label("maybe", labels) is None
    assert match_label("nobody knows", labels) is None  # a word boundary is required


def test_match_label_longest_label_first():
    labels = ["avdrag", "rut-avdrag"]
    assert match_label("rut-avdrag", labels) == "rut-avdrag"
    assert match_label("Detta är ett RUT-avdrag.", labels) == "rut-avdrag"
    assert match_label("Ett vanligt avdrag", labels) == "avdrag"
    assert match_label("rut-avdrag eller avdrag", labels) is None
    assert match_label("avdrag, avdrag", labels) == "avdrag"


def test_label_accuracy_scores():
    m = LabelAccuracy(labels=["avdrag", "rut-avdrag"])
    assert m.score("Detta är ett rut-avdrag.", "rut-avdrag") == Score(
        1.0, details={"label": "rut-avdrag"})
    assert m.score("Ett avdrag", "rut-avdrag") == Score(0.0, details={"label": "avdrag"})
    two = m.score("rut-avdrag or avdrag", "avdrag")
    assert two.value == 0.0
    assert two.details == {"label": None, "why": "output names no single label"}
    off = m.score("avdrag", "other")
    assert off.value is None
    assert off.reason == "reference 'other' is not one of the task's labels"


def test_label_accuracy_without_labels_compares_normalized_text():
    m = LabelAccuracy()
    assert m.score("Kitchen!", "kitchen").value == 1.0
    assert m.score("bathroom", "kitchen").value == 0.0
    assert m.score("...", "kitchen") == Score(0.0, details={"label": None,
                                                            "why": "output names no single label"})


def test_macro_f1_hand_computed():
    m = MacroF1(labels=["a", "b", "c"])
    refs = ["a", "a", "b", "b", "c", "c"]
    preds = ["a", "b", "b", "The answer is b", "c", "a"]
    # a: tp1 fp1 fn1 -> 1/2; b: tp2 fp1 fn0 -> 4/5; c: tp1 fp0 fn1 -> 2/3
    assert m.corpus(preds, refs) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert [m.score(p, r).value for p, r in zip(preds, refs, strict=True)] == [
        1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert m.corpus(refs, refs) == 1.0
    assert m.corpus([], []) is None


def test_macro_f1_unmatched_prediction_counts_as_a_miss():
    m = MacroF1(labels=["x", "y"])
    # x: tp1 fp0 fn1 -> 2/3; y: tp1 fp0 fn0 -> 1
    assert m.corpus(["x", "x or y", "y"], ["x", "x", "y"]) == pytest.approx((2 / 3 + 1) / 2)


# ---- token F1 ---------------------------------------------------------------------------

def test_token_f1_hand_computed():
    m = TokenF1()
    # overlap 1 ("cat"): precision 1/3, recall 1/2 -> F1 0.4
    assert m.score("cat cat dog", "Cat sat").value == pytest.approx(0.4)
    assert m.score("The cat, sat.", "the cat sat").value == 1.0
    assert m.score("dog", "cat").value == 0.0
    assert m.score("", "cat").value == 0.0


def test_token_f1_empty_reference_is_unscored_not_nan():
    s = TokenF1().score("anything", " ?! ")
    assert s.value is None
    assert s.reason == "reference is empty after normalization"
    s2 = TokenF1().score("", "")
    assert s2.value is None and s2.reason


# ---- JSON -------------------------------------------------------------------------------

def test_parse_json_variants():
    assert parse_json('{"a": 1}') == ({"a": 1}, None)
    assert parse_json('Sure!\n```json\n{"a": [1, 2]}\n```\nDone.') == ({"a": [1, 2]}, None)
    assert parse_json("```\n[1, 2]\n```") == ([1, 2], None)
    assert parse_json('The result is {"ok": true} as asked') == ({"ok": True}, None)
    assert parse_json("no json here") == (None, "output is not valid JSON")
    assert parse_json('{"a": 1') == (None, "output is not valid JSON")


def test_json_valid():
    m = JsonValid()
    assert m.score('{"a": 1}', "") == Score(1.0)
    assert m.score('```json\n{"a": 1}\n```', "").value == 1.0
    bad = m.score("{'a': 1}", "")
    assert bad.value == 0.0
    assert bad.details == {"error": "output is not valid JSON"}


def test_values_equal_is_type_aware():
    assert values_equal(1, 1.0)
    assert values_equal(0.1 + 0.2, 0.3)
    assert values_equal("Paris", "paris")
    assert values_equal(" Paris! ", "paris")
    assert not values_equal(True, 1)
    assert not values_equal(1, True)
    assert not values_equal(False, 0)
    assert values_equal(True, True)
    assert not values_equal(True, False)
    assert not values_equal("1", 1)
    assert values_equal(None, None)
    assert not values_equal(None, 0)
    assert values_equal([1, "A"], [1.0, "a"])
    assert not values_equal([1], [1, 2])
    assert values_equal({"k": 2}, {"k": 2.0})
    assert not values_equal({"k": 2}, {"j": 2})


def test_json_match_per_field_fraction_nested():
    m = JsonMatch()
    ref = '{"name": "Ada", "address": {"city": "Lund", "zip": "22100"}, "age": 36}'
    pred = ('```json\n{"name": "ada", "address": {"city": "LUND", "zip": "22222"}, '
            '"age": 36.0, "note": "x"}\n```')
    s = m.score(pred, ref)
    assert s.value == 0.75
    assert s.details == {"valid_json": True,
                         "fields": {"name": True, "address.city": True, "address.zip": False,
                                    "age": True},
                         "extra": ["note"]}


def test_json_match_missing_fields_and_wrong_types():
    m = JsonMatch()
    ref = '{"a": 1, "b": {"c": true, "d": [1, 2]}}'
    s = m.score('{"a": 1, "b": {"c": 1}}', ref)
    assert s.value == pytest.approx(1 / 3)
    assert s.details["fields"] == {"a": True, "b.c": False, "b.d": False}
    assert m.score('{"a": 1, "b": {"c": true, "d": [1.0, 2]}}', ref).value == 1.0
    assert m.score("[1, 2]", ref).value == 0.0


def test_json_match_non_object_reference():
    m = JsonMatch()
    assert m.score("[1, 2]", "[1, 2.0]").value == 1.0
    assert m.score("3", "4").value == 0.0


def test_json_match_invalid_prediction_scores_zero():
    s = JsonMatch().score("sorry, I can't", '{"a": 1}')
    assert s == Score(0.0, details={"valid_json": False})


def test_json_match_reference_not_json_is_unscored():
    s = JsonMatch().score('{"a": 1}', "not json at all")
    assert s.value is None
    assert s.reason == "reference is not valid JSON"


def test_json_match_schema_violation_scores_zero():
    schema = {"type": "object", "properties": {"age": {"type": "integer"}},
              "required": ["age"]}
    m = JsonMatch(schema=schema)
    bad = m.score('{"age": "old"}', '{"age": 3}')
    assert bad.value == 0.0
    assert bad.details["valid_json"] is True
    assert bad.details["schema_errors"] == ["'old' is not of type 'integer'"]
    missing = m.score("{}", '{"age": 3}')
    assert missing.details["schema_errors"] == ["'age' is a required property"]
    assert m.score('{"age": 3}', '{"age": 3}').value == 1.0


def test_build_metric_through_plugins():
    m = build_metric("accuracy", labels=["a", "b"])
    assert isinstance(m, LabelAccuracy)
    assert m.labels == ["a", "b"]
    assert build_metric("token_f1").name == "token_f1"
    j = build_metric("json_match", schema={"type": "object"})
    assert isinstance(j, JsonMatch) and j.schema == {"type": "object"}


# ---- bootstrap --------------------------------------------------------------------------

def test_bootstrap_mean_contains_mean_and_is_deterministic():
    values = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 3
    a = bootstrap_mean(values)
    b = bootstrap_mean(values)
    assert a == b
    assert a.value == pytest.approx(0.7)
    assert a.n == 30
    assert 0.0 <= a.low < a.value < a.high <= 1.0
    assert a.high - a.low < 0.5
    assert a.as_dict() == {"value": a.value, "low": a.low, "high": a.high, "n": 30}
    wider = bootstrap_mean(values, level=0.99)
    assert wider.low <= a.low and wider.high >= a.high


def test_bootstrap_mean_constant_and_empty():
    c = bootstrap_mean([0.5] * 8)
    assert (c.value, c.low, c.high, c.n) == (0.5, 0.5, 0.5, 8)
    e = bootstrap_mean([])
    assert e == Interval(None, None, None, 0)
    assert e.as_dict() == {"value": None, "low": None, "high": None, "n": 0}


def test_bootstrap_stat():
    values = [1.0, 0.0, 1.0, 1.0]

    def mean_of(idx):
        return sum(values[i] for i in idx) / len(idx)

    iv = bootstrap_stat(4, mean_of, resamples=200)
    assert iv.value == 0.75 and iv.n == 4
    assert iv.low <= 0.75 <= iv.high
    assert iv == bootstrap_stat(4, mean_of, resamples=200)
    assert bootstrap_stat(0, mean_of) == Interval(None, None, None, 0)


def test_percentile():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([], 95) is None
    assert not math.isnan(percentile([7.0], 95))
