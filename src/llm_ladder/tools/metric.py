"""The `tool_call` metric: did the model call the right tools with the right arguments?

A reference is one of
  * the expected call(s) as JSON: `[{"name": ..., "arguments": {...}}]` (a single object is
    read as a list of one). Instead of (or on top of) exact `arguments`, a call may give
    `"acceptable": {arg: [value, ...]}`, BFCL's form: any listed value is right, `""` in the
    list means the argument may be left out, and a dict value holds lists of acceptable
    values per key. `"unordered": [arg, ...]` makes those list arguments order-insensitive;
  * `[]`: no tool should be called (irrelevance);
  * any other text: the expected final answer (tools executed end to end); it is right when
    the answer contains it after normalization.

The prediction is the tool loop's JSON (`{"calls": [...], "answer": "..."}`) or raw model
text, from which the first JSON call is read (so prompting rungs are scored the same way).
Comparison is type-aware: numbers by value (5 == 5.0), strings BFCL-normalized (case, spaces
and `,./-_*^` ignored), bools strictly, lists in order unless unordered. Several calls are
matched in any order (BFCL's parallel semantics). An argument the reference does not name
is wrong, unless the metric was given the tool schemas and the value equals the declared
default. The score is 1 only when every call is right; `details["sub"]` holds the
sub-scores (name, args, call, irrelevance, answer) that the run summary averages.
Deliberately skipped: executing calls to compare their results, partial credit in `value`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

from llm_ladder.metrics import Score, unscored
from llm_ladder.splits import normalize_text
from llm_ladder.tools.calls import parse_calls
from llm_ladder.tools.schemas import Call

OMIT = ""  # BFCL: an acceptable value of "" means "may be left out"


# ---- reading references and predictions -------------------------------------------------

class BadReference(ValueError):
    pass


def read_reference(reference: str) -> list[Call] | str:
    """The reference's calls (possibly []) or, when it is not JSON calls, its answer text."""
    try:
        value = json.loads(reference)
    except (json.JSONDecodeError, TypeError):
        return reference
    if isinstance(value, dict) and "name" in value:
        value = [value]
    if not isinstance(value, list):
        return reference
    for i, call in enumerate(value):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise BadReference(f"call {i} has no string 'name'")
        for key in ("arguments", "acceptable"):
            if key in call and not isinstance(call[key], dict):
                raise BadReference(f"call {i} ({call['name']}): '{key}' must be an object")
        for arg, vals in (call.get("acceptable") or {}).items():
            if not isinstance(vals, list) or not vals:
                raise BadReference(f"call {i} ({call['name']}): acceptable values of "
                                   f"'{arg}' must be a non-empty list")
    return value


def canonical_call(call: Call) -> Call:
    """One concrete call for a reference (used for few-shot turns): exact arguments, or the
    first acceptable value of each argument that is not "" (omitted when there is none)."""
    args = dict(call.get("arguments") or {})
    for arg, vals in (call.get("acceptable") or {}).items():
        picked = _pick(vals)
        if picked is _NONE:
            args.pop(arg, None)
        else:
            args[arg] = picked
    return {"name": call["name"], "arguments": args}


_NONE = object()


def _pick(vals: list[Any]) -> Any:
    for v in vals:
        if v != OMIT:
            if isinstance(v, dict):  # BFCL nesting: each key holds acceptable values
                got = {k: _pick(x) if isinstance(x, list) else x for k, x in v.items()}
                return {k: x for k, x in got.items() if x is not _NONE}
            return v
    return _NONE


def read_prediction(prediction: str) -> tuple[list[Call], str]:
    """(calls, answer text) from the tool loop's JSON output or from raw model text."""
    try:
        value = json.loads(prediction)
    except (json.JSONDecodeError, TypeError):
        value = None
    if isinstance(value, dict) and set(value) <= {"calls", "answer"} and "calls" in value:
        return list(value.get("calls") or []), str(value.get("answer") or "")
    return parse_calls(prediction), prediction


# ---- comparing values ---------------------------------------------------------------------

_STRIP = re.compile(r"[ ,./\-_*^]")


def standardize(text: str) -> str:
    """BFCL's string normalization: no spaces or ,./-_*^, lower case, ' read as "."""
    return _STRIP.sub("", text).lower().replace("'", '"')


def same(got: Any, want: Any, unordered: bool = False) -> bool:
    """Type-aware equality of one predicted value with one acceptable value."""
    if isinstance(got, bool) or isinstance(want, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(got, int | float) and isinstance(want, int | float):
        return abs(float(got) - float(want)) <= 1e-9 * max(1.0, abs(float(want)))
    if isinstance(got, str) and isinstance(want, str):
        return standardize(got) == standardize(want)
    if isinstance(got, list | tuple) and isinstance(want, list | tuple):
        if len(got) != len(want):
            return False
        if not unordered:
            return all(same(g, w) for g, w in zip(got, want, strict=True))
        left = list(want)
        for g in got:
            hit = next((i for i, w in enumerate(left) if same(g, w)), None)
            if hit is None:
                return False
            left.pop(hit)
        return True
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    return got == want


def _nested_ok(got: Any, want: dict[str, Any]) -> bool:
    """BFCL's dict form: `want` maps each key to its acceptable values ("" = optional)."""
    if not isinstance(got, dict):
        return False
    for k, v in got.items():
        if k not in want or not any(same(v, w) for w in _as_list(want[k]) if w != OMIT):
            return False
    return all(k in got or OMIT in _as_list(v) for k, v in want.items())


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def value_ok(got: Any, acceptable: list[Any], unordered: bool, bfcl: bool) -> bool:
    for want in acceptable:
        if want == OMIT and bfcl:
            continue
        if bfcl and isinstance(want, dict) and all(isinstance(x, list) for x in want.values()):
            if _nested_ok(got, want):
                return True
        elif same(got, want, unordered):
            return True
    return False


# ---- comparing calls ----------------------------------------------------------------------

def compare_call(got: Call, want: Call, defaults: dict[str, dict[str, Any]] | None = None
                 ) -> dict[str, bool]:
    """Per argument: right or wrong (every argument of either call is listed)."""
    props = (defaults or {}).get(want["name"], {})
    exact = want.get("arguments") or {}
    acceptable: dict[str, tuple[list[Any], bool]] = {k: ([v], False) for k, v in exact.items()}
    acceptable |= {k: (list(v), True) for k, v in (want.get("acceptable") or {}).items()}
    unordered = set(want.get("unordered") or []) | {
        k for k, p in props.items() if p.get("uniqueItems") or p.get("x-unordered")}
    args = got.get("arguments")
    if not isinstance(args, dict):
        return {k: False for k in acceptable} or {"(arguments)": False}
    out: dict[str, bool] = {}
    for arg, (vals, bfcl) in acceptable.items():
        default = props.get(arg, {}).get("default", _NONE)
        if arg not in args:
            out[arg] = (bfcl and OMIT in vals) or (
                default is not _NONE and any(same(default, v) for v in vals))
        else:
            out[arg] = value_ok(args[arg], vals, arg in unordered, bfcl)
    for arg, v in args.items():
        if arg not in acceptable:  # unexpected, unless it just restates the default
            default = props.get(arg, {}).get("default", _NONE)
            out[arg] = default is not _NONE and same(v, default)
    return out


def match_calls(got: list[Call], want: list[Call], defaults: dict | None = None
                ) -> tuple[list[dict[str, bool] | None], float]:
    """Pair each reference call with a distinct predicted call (any order), maximizing the
    right arguments; returns per reference call its argument results (None: no call of that
    name) and the fraction of arguments right."""
    def table(pairing: tuple[int | None, ...]) -> list[dict[str, bool] | None]:
        return [compare_call(got[j], w, defaults) if j is not None
                and got[j].get("name") == w["name"] else None
                for w, j in zip(want, pairing, strict=True)]

    def right(rows: list[dict[str, bool] | None]) -> tuple[int, int]:
        ok = sum(sum(r.values()) for r in rows if r)
        total = sum(len(r) if r else max(1, _n_args(w)) for r, w in zip(rows, want, strict=True))
        return ok, total

    slots: list[int | None] = list(range(len(got))) + [None] * len(want)
    best: list[dict[str, bool] | None] = [None] * len(want)
    best_key = (-1.0, 0)
    if math.perm(len(slots), len(want)) <= 5000:
        pairings: Any = itertools.permutations(slots, len(want))
    else:  # many calls: greedy, each reference call takes the best free call of its name
        free, greedy = set(range(len(got))), []
        for w in want:
            cands = [j for j in free if got[j].get("name") == w["name"]]
            j = max(cands, key=lambda j: sum(compare_call(got[j], w, defaults).values()),
                    default=None)
            free.discard(j)
            greedy.append(j)
        pairings = [tuple(greedy)]
    for pairing in pairings:
        rows = table(pairing)
        ok, total = right(rows)
        key = (ok / total if total else 1.0, -total)
        if key > best_key:
            best, best_key = rows, key
    return best, max(best_key[0], 0.0)


def _n_args(call: Call) -> int:
    return len(set(call.get("arguments") or {}) | set(call.get("acceptable") or {}))


class ToolCall:
    """Whole call right (names and every argument); sub-scores in details["sub"]."""

    name = "tool_call"

    def __init__(self, tools: list[dict[str, Any]] | None = None, **_: Any):
        # optional tool schemas: defaults and unordered (uniqueItems) list arguments
        self.defaults = {t["function"]["name"]:
                         (t["function"].get("parameters") or {}).get("properties") or {}
                         for t in tools or []}

    def score(self, prediction: str, reference: str) -> Score:
        try:
            want = read_reference(reference)
        except BadReference as e:
            return unscored(f"reference is not valid tool calls: {e}")
        calls, answer = read_prediction(prediction)
        shown = [{"name": c.get("name"), "arguments": c.get("arguments")} for c in calls]
        if isinstance(want, str):
            ok = bool(normalize_text(want)) and normalize_text(want) in normalize_text(answer)
            return Score(float(ok), details={"kind": "answer", "calls": shown,
                                             "sub": {"answer": float(ok)}})
        if not want:
            ok = not calls
            return Score(float(ok), details={"kind": "irrelevance", "calls": shown,
                                             "sub": {"irrelevance": float(ok)}})
        names_ok = sorted(str(c.get("name")) for c in calls) == sorted(w["name"] for w in want)
        rows, arg_acc = match_calls(calls, want, self.defaults)
        whole = (names_ok and len(calls) == len(want)
                 and all(r is not None and all(r.values()) for r in rows))
        return Score(float(whole), details={
            "kind": "call", "calls": shown, "args": rows,
            "sub": {"call": float(whole), "name": float(names_ok), "args": arg_acc}})
