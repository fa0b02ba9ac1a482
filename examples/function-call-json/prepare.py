"""Build data/calls.jsonl from the PyPI package `bfcl-eval` (Apache 2.0).

Task: given one function definition (JSON) and a user request, reply with the call as a JSON
object {"name": ..., "arguments": {...}}. Source: the Berkeley Function Calling Leaderboard's
"simple_python" category (bfcl-eval 2026.3.23, data/BFCL_v4_simple_python.json and
data/possible_answer/BFCL_v4_simple_python.json).

BFCL lists every acceptable value of each argument (with "" meaning "may be omitted"). The
reference output uses, for each argument, the first acceptable value that is not ""; an
argument whose only acceptable value is "" is left out. Nested dicts follow the same rule
one level down. All acceptable values are kept in meta["acceptable"]. Rows whose answer
cannot be written as one such object are skipped and counted by reason, never silently.

Run: pip install --no-deps bfcl-eval==2026.3.23; python prepare.py
(The package is only read from disk, not imported: its dependencies are not needed.)
"""

import importlib.util
import json
from collections import Counter
from pathlib import Path

SPLIT = "BFCL_v4_simple_python.json"

spec = importlib.util.find_spec("bfcl_eval")
if spec is None or not spec.submodule_search_locations:
    raise SystemExit("bfcl-eval is not installed: pip install --no-deps bfcl-eval==2026.3.23")
root = Path(list(spec.submodule_search_locations)[0]) / "data"
out = Path(__file__).parent / "data" / "calls.jsonl"


class Unexpressible(Exception):
    """The answer cannot be written as one {"name", "arguments"} object."""


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


OMIT = object()


def pick(acceptable: object, where: str) -> object:
    """The first acceptable value that is not "" (resolved), or OMIT if there is none."""
    if not isinstance(acceptable, list):
        raise Unexpressible(f"acceptable values of {where} are not a list")
    for value in acceptable:
        if value != "":
            return resolve(value, where)
    return OMIT


def resolve(value: object, where: str) -> object:
    """A concrete value: dicts hold lists of acceptable values per key (BFCL's nesting)."""
    if isinstance(value, dict):
        got = {k: pick(v, f"{where}.{k}") for k, v in value.items()}
        return {k: v for k, v in got.items() if v is not OMIT}
    if isinstance(value, list):
        return [resolve(v, f"{where}[]") if isinstance(v, dict) else v for v in value]
    return value


def convert(row: dict, answer: dict) -> tuple[str, str, dict]:
    turns, functions, calls = row["question"], row["function"], answer["ground_truth"]
    if len(turns) != 1 or [m["role"] for m in turns[0]] != ["user"]:
        raise Unexpressible("question is not a single user turn")
    if len(functions) != 1:
        raise Unexpressible("more than one function offered")
    if len(calls) != 1 or len(calls[0]) != 1:
        raise Unexpressible("answer is not exactly one call")
    (name, acceptable), = calls[0].items()
    fn = functions[0]
    if name != fn["name"]:
        raise Unexpressible("answer calls a function that is not offered")
    arguments = {}
    for arg, values in acceptable.items():
        v = pick(values, arg)
        if v is OMIT:
            if arg in fn["parameters"].get("required", []):
                raise Unexpressible("a required argument has no value")
            continue
        arguments[arg] = v
    text = (f"Function:\n{json.dumps(fn, ensure_ascii=False, separators=(',', ':'))}\n\n"
            f"Request: {turns[0][0]['content'].strip()}")
    target = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return text, target, {"function": name, "acceptable": acceptable}


questions = read_jsonl(root / SPLIT)
answers = {a["id"]: a for a in read_jsonl(root / "possible_answer" / SPLIT)}
skipped: Counter[str] = Counter()
written = 0
with out.open("w", encoding="utf-8") as g:
    for row in questions:
        if row["id"] not in answers:
            skipped["no possible answer"] += 1
            continue
        try:
            text, target, meta = convert(row, answers[row["id"]])
        except Unexpressible as e:
            skipped[str(e)] += 1
            continue
        g.write(json.dumps({"id": row["id"], "input": text, "output": target, "meta": meta},
                           ensure_ascii=False) + "\n")
        written += 1
print(f"wrote {out}: {written} rows from {len(questions)}; skipped {sum(skipped.values())}")
for reason, n in skipped.most_common():
    print(f"  skipped {n}: {reason}")
