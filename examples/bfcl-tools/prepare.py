"""Build data/calls.jsonl from the PyPI package `bfcl-eval` (Apache 2.0).

Task: answer a user request that may need one of the offered functions. Each example offers
its own functions (BFCL style) in meta.tools, in the OpenAI tools format, and its reference
is either the expected call with BFCL's acceptable values per argument
(`[{"name": ..., "acceptable": {arg: [value, ...]}}]`, "" = may be left out) or `[]` when
no offered function fits (BFCL's irrelevance category).

Source: the Berkeley Function Calling Leaderboard, bfcl-eval 2026.3.23, categories
simple_python (one function), multiple (2-4 functions, pick one) and irrelevance (none
fits): data/BFCL_v4_<category>.json and data/possible_answer/BFCL_v4_<category>.json.

Conversion: BFCL types become JSON Schema types (dict -> object, float -> number,
tuple -> array, any -> string, as bfcl-eval's own GORILLA_TO_OPENAPI table does); the
BFCL-only key "optional" is dropped; "." in function names becomes "_" (OpenAI's tool-name
rule), in the functions and the answers alike. Rows that cannot be converted are counted by
reason, never dropped silently.

Run: pip install --no-deps bfcl-eval==2026.3.23; python prepare.py
(The package is only read from disk, not imported: its dependencies are not needed.)
"""

import importlib.util
import json
from collections import Counter
from pathlib import Path

CATEGORIES = ["simple_python", "multiple", "irrelevance"]
TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string",
         "list": "array", "bool": "boolean"}

spec = importlib.util.find_spec("bfcl_eval")
if spec is None or not spec.submodule_search_locations:
    raise SystemExit("bfcl-eval is not installed: pip install --no-deps bfcl-eval==2026.3.23")
root = Path(list(spec.submodule_search_locations)[0]) / "data"
out = Path(__file__).parent / "data" / "calls.jsonl"


class Unconvertible(Exception):
    pass


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def schema(value: object) -> object:
    """BFCL's parameter schema as JSON Schema (types renamed, "optional" dropped)."""
    if isinstance(value, dict):
        got = {}
        for k, v in value.items():
            if k == "optional":
                continue
            if k == "type" and isinstance(v, str):
                got[k] = TYPES.get(v, v)
            elif k == "properties" and isinstance(v, dict):
                got[k] = {name: schema(p) for name, p in v.items()}
            else:
                got[k] = schema(v)
        return got
    if isinstance(value, list):
        return [schema(v) for v in value]
    return value


def tool(fn: dict) -> dict:
    return {"type": "function", "function": {
        "name": fn["name"].replace(".", "_"), "description": fn.get("description", ""),
        "parameters": schema(fn["parameters"])}}


def convert(row: dict, answer: dict | None) -> tuple[str, str, dict]:
    turns = row["question"]
    if len(turns) != 1 or [m["role"] for m in turns[0]] != ["user"]:
        raise Unconvertible("question is not a single user turn")
    tools = [tool(fn) for fn in row["function"]]
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise Unconvertible("two offered functions share a name")
    if answer is None:
        reference: list = []
    else:
        if len(answer["ground_truth"]) != 1:
            raise Unconvertible("answer is not exactly one call")
        (name, acceptable), = answer["ground_truth"][0].items()
        name = name.replace(".", "_")
        if name not in names:
            raise Unconvertible("answer calls a function that is not offered")
        reference = [{"name": name, "acceptable": acceptable}]
    return turns[0][0]["content"].strip(), json.dumps(reference, ensure_ascii=False), \
        {"tools": tools}


skipped: Counter[str] = Counter()
written = Counter()
with out.open("w", encoding="utf-8") as g:
    for cat in CATEGORIES:
        file = f"BFCL_v4_{cat}.json"
        answers = ({} if cat == "irrelevance" else
                   {a["id"]: a for a in read_jsonl(root / "possible_answer" / file)})
        for row in read_jsonl(root / file):
            if cat != "irrelevance" and row["id"] not in answers:
                skipped[f"{cat}: no possible answer"] += 1
                continue
            try:
                text, ref, meta = convert(row, answers.get(row["id"]))
            except Unconvertible as e:
                skipped[f"{cat}: {e}"] += 1
                continue
            meta["category"] = cat
            g.write(json.dumps({"id": row["id"], "input": text, "output": ref, "meta": meta},
                               ensure_ascii=False) + "\n")
            written[cat] += 1
print(f"wrote {out}: {sum(written.values())} rows ({dict(written)}); "
      f"skipped {sum(skipped.values())}")
for reason, n in skipped.most_common():
    print(f"  skipped {n}: {reason}")
