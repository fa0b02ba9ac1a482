"""Metrics: score one prediction against its reference, and optionally the whole corpus.

A metric returns `Score(value, reason)`; `value is None` means "unscored" and the reason
says why (never NaN). Per-example values feed the intervals (llm_ladder.stats); a metric with
a `corpus` method (macro-F1, over a label set fixed once per test set) is bootstrapped on that
instead. A metric may declare `needs` (e.g. the judge metric, llm_ladder.judging, needs
{"judge"}): the caller supplies that resource to `build_metric`; no metric opens a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from llm_ladder.errors import LadderError
from llm_ladder.splits import normalize_text
from llm_ladder.stats import macro_f1_table


@dataclass
class Score:
    """A metric's verdict on one prediction: a value, or None with the reason it is unscored."""

    value: float | None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def unscored(reason: str) -> Score:
    return Score(None, reason)


@runtime_checkable
class Metric(Protocol):
    """Scores one prediction against its reference; may also score a whole corpus."""

    name: str

    def score(self, prediction: str, reference: str) -> Score: ...


class ExactMatch:
    name = "exact_match"

    def __init__(self, **_: Any):
        pass

    def score(self, prediction: str, reference: str) -> Score:
        return Score(float(prediction.strip() == reference.strip()))


class NormalizedMatch:
    """Equal after lower-casing, NFKC, and dropping punctuation and extra spaces."""

    name = "normalized_match"

    def __init__(self, **_: Any):
        pass

    def score(self, prediction: str, reference: str) -> Score:
        return Score(float(normalize_text(prediction) == normalize_text(reference)))


def match_label(text: str, labels: Sequence[str]) -> str | None:
    """The label an output names: an exact (normalized) match, else the only label it mentions
    (longest labels first, so 'rut-avdrag' is not read as 'avdrag')."""
    norm = normalize_text(text)
    table = {normalize_text(lab): lab for lab in labels}
    if norm in table:
        return table[norm]
    found = []
    padded = f" {norm} "
    for key in sorted(table, key=len, reverse=True):
        if key and f" {key} " in padded:
            found.append(table[key])
            padded = padded.replace(f" {key} ", " ")
    return found[0] if len(found) == 1 else None


class LabelAccuracy:
    """Classification accuracy: the output must name exactly one label, the right one."""

    name = "accuracy"
    output_kind = "label"  # outputs are a closed label set (read by prepare, decide)

    def __init__(self, labels: Sequence[str] | None = None, **_: Any):
        self.labels = list(labels) if labels else None

    def label_of(self, text: str) -> str | None:
        if self.labels is None:
            return normalize_text(text) or None
        return match_label(text, self.labels)

    def score(self, prediction: str, reference: str) -> Score:
        reference = reference.strip()
        if self.labels is not None and reference not in self.labels:
            return unscored(f"reference {reference!r} is not one of the task's labels")
        got = self.label_of(prediction)
        if got is None:
            return Score(0.0, details={"label": None, "why": "output names no single label"})
        return Score(float(got == (reference if self.labels else normalize_text(reference))),
                     details={"label": got})


class MacroF1(LabelAccuracy):
    """Per example: correct or not; over the corpus: the unweighted mean F1 over a fixed label
    set: the task's labels that occur among the references or the predicted labels of the
    whole test set (without `labels`: the normalized references), fixed once; resamples
    and paired comparisons reuse it, and a label missing from a resample scores F1 0."""

    name = "macro_f1"

    def encode(self, predictions: Sequence[str], references: Sequence[str],
               label_set: Sequence[str] | None = None
               ) -> tuple[list[int], list[int], list[str]]:
        """(reference indices, predicted indices, label set). A prediction that names no label
        of the set gets index len(label set); references must be in the set."""
        got = [self.label_of(p) for p in predictions]
        refs = [r.strip() for r in references] if self.labels \
            else [normalize_text(r) for r in references]
        if label_set is None:
            seen = set(refs) | {g for g in got if g is not None}
            label_set = [lab for lab in self.labels if lab in seen] if self.labels \
                else sorted(set(refs))
        index = {lab: i for i, lab in enumerate(label_set)}
        return ([index[r] for r in refs], [index.get(g, len(label_set)) for g in got],
                list(label_set))

    def corpus(self, predictions: Sequence[str], references: Sequence[str]) -> float | None:
        if not references:
            return None
        ref, got, labels = self.encode(predictions, references)
        return float(macro_f1_table(np.asarray([ref]), np.asarray([got]), len(labels))[0])


class TokenF1:
    """SQuAD-style token overlap F1 on normalized text."""

    name = "token_f1"

    def __init__(self, **_: Any):
        pass

    def score(self, prediction: str, reference: str) -> Score:
        p, r = normalize_text(prediction).split(), normalize_text(reference).split()
        if not r:
            return unscored("reference is empty after normalization")
        common: dict[str, int] = {}
        for t in p:
            common[t] = common.get(t, 0) + 1
        overlap = 0
        for t in r:
            if common.get(t, 0) > 0:
                overlap += 1
                common[t] -= 1
        if overlap == 0:
            return Score(0.0)
        prec, rec = overlap / len(p), overlap / len(r)
        return Score(2 * prec * rec / (prec + rec))


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_json(text: str) -> tuple[Any, str | None]:
    """Parse JSON from model output: the whole text, a ``` fence, or the first {...}/[...]."""
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    for open_, close in (("{", "}"), ("[", "]")):
        i, j = text.find(open_), text.rfind(close)
        if i != -1 and j > i:
            candidates.append(text[i : j + 1])
    for c in candidates:
        try:
            return json.loads(c), None
        except (json.JSONDecodeError, ValueError):
            continue
    return None, "output is not valid JSON"


class JsonValid:
    name = "json_valid"
    output_kind = "json"

    def __init__(self, **_: Any):
        pass

    def score(self, prediction: str, reference: str) -> Score:
        _, err = parse_json(prediction)
        return Score(0.0 if err else 1.0, details={"error": err} if err else {})


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: value}


def values_equal(a: Any, b: Any) -> bool:
    """Type-aware equality: numbers numerically, strings normalized, lists element-wise."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    if isinstance(a, str) and isinstance(b, str):
        return normalize_text(a) == normalize_text(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return a == b


class JsonMatch:
    """Structured output: fraction of the reference's leaf fields the output gets right.

    With a JSON schema, an output that fails validation scores 0 (details say why). Extra
    fields in the output are reported but not penalised beyond the schema.
    """

    name = "json_match"
    output_kind = "json"

    def __init__(self, schema: dict[str, Any] | None = None, **_: Any):
        self.schema = schema
        self._validator = None
        if schema is not None:
            import jsonschema

            jsonschema.Draft202012Validator.check_schema(schema)
            self._validator = jsonschema.Draft202012Validator(schema)

    def score(self, prediction: str, reference: str) -> Score:
        ref, err = parse_json(reference)
        if err:
            return unscored("reference is not valid JSON")
        got, err = parse_json(prediction)
        if err:
            return Score(0.0, details={"valid_json": False})
        if self._validator is not None:
            errors = [e.message for e in self._validator.iter_errors(got)]
            if errors:
                return Score(0.0, details={"valid_json": True, "schema_errors": errors[:3]})
        want = _leaves(ref)
        have = _leaves(got) if isinstance(got, dict) else {"": got}
        fields = {k: (k in have and values_equal(have[k], v)) for k, v in want.items()}
        return Score(sum(fields.values()) / len(fields),
                     details={"valid_json": True, "fields": fields,
                              "extra": sorted(set(have) - set(want))})


def build_metric(name: str, labels: list[str] | None = None,
                 schema: dict[str, Any] | None = None, **resources: Any) -> Metric:
    """The metric registered as `name`, built with the task's label set and JSON schema, and
    the resources it declares in `needs` (e.g. `judge=model, config=task.judge`)."""
    from llm_ladder import plugins

    return plugins.get("metrics", name)(labels=labels, schema=schema, **resources)


def metric_needs(name: str) -> frozenset[str]:
    """What a metric declares it needs from the session (e.g. {"judge"}); empty for most."""
    from llm_ladder import plugins

    try:
        return frozenset(getattr(plugins.get("metrics", name), "needs", ()))
    except LadderError:
        return frozenset()


def output_kind(name: str) -> str:
    """What a metric's outputs are, as the metric declares it: "label" (a closed label set),
    "json", or "text" (the default for metrics that declare nothing)."""
    from llm_ladder import plugins

    try:
        return getattr(plugins.get("metrics", name), "output_kind", "text")
    except LadderError:
        return "text"
