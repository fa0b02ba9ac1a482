"""`ladder init`: a first task.toml written from a bare examples file.

`infer_task` reads the examples (any row format `data.py` accepts) and infers the kind:
labels when the outputs are few distinct short strings, JSON when every output parses as a
JSON object (a JSON schema is inferred from them), free text otherwise. From that it proposes
the metric, the label set, the bar, a split whose test part is large enough for the decision
(`decide.power_report`: the smallest margin above the bar confirmed with 80% power, for the
rungs that will be climbed), the generation length, the embedded model and, with a corpus or
tools, `[corpus]`/`[retrieval]` or `[tools]`. `render_toml` writes it as a commented file in
which every value says why it was chosen; `init_task` writes the folder and runs the checks
(`session.prepare`). The metric, the label set, the bar and the model can be given
(`metric`, `labels`, `bar`, `model_*`): `ladder init` asks for them on a terminal
(cli/init.py), with the proposal as the default. Skipped: CSV dialects other than `data.py`'s,
and guessing a system prompt beyond a one-line description.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_ladder.data import Example, load_examples
from llm_ladder.decide import power_report
from llm_ladder.errors import LadderError
from llm_ladder.rungs.base import ladder_for
from llm_ladder.session import Prepared, prepare
from llm_ladder.splits import split_examples
from llm_ladder.task import TASK_FILE, Task, load_task, parse_task

MAX_LABELS = 50          # more distinct outputs than this is not a closed label set
MAX_LABEL_CHARS = 40     # a label is a short string
TEST_FRACTIONS = (0.2, 0.25, 0.3, 0.4, 0.5)
TARGET_MARGIN = 0.10     # the test split should confirm a rung 0.10 above the bar (80% power)
CAP_MARGIN = 0.05        # ... and need not be larger than what confirms a 0.05 margin
# the metrics that fit each inferred kind (the first is what `infer_task` proposes by default)
METRICS_FOR = {"labels": ("accuracy", "macro_f1"), "json": ("json_match", "json_valid"),
               "text": ("token_f1", "normalized_match", "exact_match"), "tools": ("tool_call",)}
EMBEDDED = "smollm2-135m"
DEFAULT_BARS = {"accuracy": 0.8, "macro_f1": 0.7, "json_match": 0.8, "normalized_match": 0.7,
                "token_f1": 0.5, "tool_call": 0.7}


@dataclass
class Choice:
    """One value of the task file and the sentence that says why."""

    value: Any
    why: str


@dataclass
class Inference:
    """What `infer_task` proposes; `render_toml` writes it."""

    name: str
    kind: str  # "labels" | "json" | "text" | "tools"
    examples: str  # the examples path as written in the task file
    rows: int
    description: Choice
    metric: Choice
    bar: Choice
    split: dict[str, float]
    split_why: str
    max_test: Choice | None
    max_tokens: Choice
    labels: Choice | None = None
    schema: dict[str, Any] | None = None
    corpus: str | None = None
    tools: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    model_why: str = ""
    power: dict[str, Any] = field(default_factory=dict)


def _rel(path: Path, folder: Path) -> str:
    """`path` as the task file should name it: relative to the task folder when possible."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive
        return path.resolve().as_posix()


def _as_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _json_type(values: list[Any]) -> dict[str, Any]:
    """A JSON schema for the values seen at one place (types only, recursing into objects)."""
    names = {"bool": "boolean", "int": "integer", "float": "number", "str": "string",
             "list": "array", "dict": "object", "NoneType": "null"}
    types = sorted({names[type(v).__name__] for v in values})
    if "integer" in types and "number" in types:
        types.remove("integer")
    schema: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    if types == ["object"]:
        schema = infer_schema(values)
    return schema


def infer_schema(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON schema for a list of objects: every key seen, typed from its values; keys
    present in every object are required. No enums or formats are guessed."""
    keys: dict[str, list[Any]] = {}
    for obj in objects:
        for k, v in obj.items():
            keys.setdefault(k, []).append(v)
    return {"type": "object",
            "properties": {k: _json_type(vs) for k, vs in keys.items()},
            "required": [k for k, vs in keys.items() if len(vs) == len(objects)]}


def infer_kind(outputs: list[str]) -> tuple[str, str]:
    """("labels" | "json" | "text", why) from the reference outputs."""
    n = len(outputs)
    distinct = Counter(o.strip() for o in outputs)
    objects = [_as_object(o) for o in outputs]
    if all(o is not None for o in objects):
        return "json", f"all {n} outputs parse as JSON objects"
    longest = max(len(o) for o in distinct)
    if len(distinct) <= min(MAX_LABELS, max(2, n // 3)) and longest <= MAX_LABEL_CHARS:
        return "labels", (f"{len(distinct)} distinct outputs among {n} rows, the longest "
                          f"{longest} characters: a closed label set")
    return "text", (f"{len(distinct)} distinct outputs among {n} rows (longest {longest} "
                    "characters): free text")


def _max_tokens(outputs: list[str], kind: str) -> Choice:
    """Room for the longest reference output: ~4 characters a token, plus half again."""
    longest = max(len(o) for o in outputs)
    n = max(16, min(1024, int(longest / 4 * 1.5) + 4))
    return Choice(n, f"the longest reference output is {longest} characters (~{longest // 4} "
                     "tokens); half as much again, so no right answer is cut off")


def _split(examples: list[Example], task_probe: Task, planned: int) -> tuple[dict[str, float],
                                                                           str, Choice | None,
                                                                           dict[str, Any]]:
    """The smallest test fraction whose test split confirms a rung TARGET_MARGIN above the
    bar with 80% power (decide.power_report), capped at what a CAP_MARGIN needs."""
    dev = 0.1 if len(examples) >= 200 else 0.0
    chosen = None
    for frac in TEST_FRACTIONS:
        sp = split_examples(examples, 1 - frac - dev, dev, frac, 0)
        rep = power_report(task_probe, len(sp.test), planned)
        chosen = (frac, len(sp.test), rep)
        if rep["min_margin"] is not None and rep["min_margin"] <= TARGET_MARGIN:
            break
    assert chosen is not None
    frac, n_test, rep = chosen
    split = {"train": round(1 - frac - dev, 4), "dev": dev, "test": frac}
    mm = rep["min_margin"]
    if mm is not None and mm <= TARGET_MARGIN:
        why = (f"test {frac:g} gives {n_test} test examples: the smallest fraction that "
               f"confirms a rung {TARGET_MARGIN:.2f} above the bar with 80% power over "
               f"{planned} planned rungs (it confirms a margin of {mm:.3f})")
    else:
        got = "no margin at all" if mm is None else f"only a margin of {mm:.3f}"
        why = (f"test {frac:g} gives {n_test} test examples, which confirms {got} above the bar "
               f"with 80% power over {planned} planned rungs: collect more examples (or lower "
               "the bar) for a decision")
    if dev:
        why += "; dev 0.1 for early stopping when fine-tuning"
    cap = None
    need = next((m["n_needed"] for m in rep["margins"]
                 if abs(m["margin"] - CAP_MARGIN) < 1e-9 and m["n_needed"]), None)
    if need is not None and n_test > need:
        cap = Choice(need, f"{need} test examples already confirm a {CAP_MARGIN:.2f} margin "
                           "with 80% power; more only make every run slower (the rest is "
                           "held back, never trained on)")
    return split, why, cap, rep


def infer_task(folder: Path, examples_file: Path, *, corpus: Path | None = None,
               tools: Path | None = None, bar: float | None = None,
               model_backend: str | None = None, model_path: str | None = None,
               metric: str | None = None, labels: list[str] | None = None,
               model_name: str | None = None) -> Inference:
    """Propose a task for `examples_file`, to be written into `folder`. `metric`, `labels`
    and `model_name` replace the proposal (checked against the data)."""
    loaded = load_examples(examples_file)
    examples = loaded.examples
    if not examples:
        raise LadderError(f"{examples_file}: no usable rows ({len(loaded.problems)} bad); "
                          "`ladder init` infers the task from the good rows")
    outputs = [e.output for e in examples]
    if tools is not None:
        kind, kind_why = "tools", f"a tools file was given ({tools.name})"
    else:
        kind, kind_why = infer_kind(outputs)
    want_metric, given_labels, labels, schema = metric, labels, None, None
    if want_metric is not None and want_metric not in METRICS_FOR[kind]:
        raise LadderError(f"metric {want_metric!r} does not fit a {kind} task ({kind_why}); "
                          f"choose one of {', '.join(METRICS_FOR[kind])}")
    if kind == "labels":
        counts = Counter(o.strip() for o in outputs)
        top, top_n = counts.most_common(1)[0]
        share = top_n / len(outputs)
        if share > 0.5 or len(counts) == 1:
            metric = Choice("macro_f1", f"{kind_why}; '{top}' is {share:.0%} of the rows, so "
                                        "accuracy would reward always answering it: macro-F1 "
                                        "weighs every label equally")
        else:
            metric = Choice("accuracy", f"{kind_why}; the most frequent label '{top}' is "
                                        f"{share:.0%} of the rows, so accuracy is not "
                                        "dominated by one label")
        labels = Choice(sorted(counts), "every distinct output, with its count: "
                        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        if given_labels is not None:
            names = sorted({x.strip() for x in given_labels if x.strip()})
            missing = sorted(set(counts) - set(names))
            if missing:
                raise LadderError("the label set must contain every output of the examples; "
                                  f"missing: {', '.join(missing[:10])}")
            extra = sorted(set(names) - set(counts))
            labels = Choice(names, labels.why + (f"; added by hand (no example yet): "
                                                 f"{', '.join(extra)}" if extra else ""))
        desc = (f"Classify the input into one of {len(counts)} labels.")
    elif kind == "json":
        metric = Choice("json_match", f"{kind_why}: scored field by field against the "
                                      "reference, with the inferred schema")
        schema = infer_schema([o for o in (_as_object(x) for x in outputs) if o is not None])
        desc = ("Reply with only a JSON object with the fields "
                + ", ".join(schema["properties"]) + ", and nothing else.")
    elif kind == "tools":
        metric = Choice("tool_call", f"{kind_why}: the function name and arguments are "
                                     "scored against the reference call")
        desc = "Help the user with the offered tools."
    else:
        words = sorted(len(o.split()) for o in outputs)
        median = words[len(words) // 2]
        if median <= 3:
            metric = Choice("normalized_match", f"{kind_why}, median {median} word(s): short "
                                                "answers, matched after normalization")
        else:
            metric = Choice("token_f1", f"{kind_why}, median {median} words: token F1 gives "
                                        "partial credit for overlapping words")
        desc = ("Answer the question in one or two sentences." if corpus is None else
                "Answer the question from the documents, citing them.")
    if want_metric is not None and want_metric != metric.value:
        metric = Choice(want_metric, f"chosen at `ladder init`; the proposal was "
                                     f"{metric.value}: {metric.why}")
    if bar is not None:
        bar_c = Choice(bar, "given with --bar")
    else:
        bar_c = Choice(DEFAULT_BARS.get(metric.value, 0.7),
                       f"a starting guess for {metric.value}, not from your data: set the "
                       "quality you need (the lower bound of a rung's interval must reach it)")
    name = folder.resolve().name or "task"
    rel_examples = _rel(examples_file, folder)
    rel_corpus = _rel(corpus, folder) if corpus is not None else None
    rel_tools = _rel(tools, folder) if tools is not None else None
    probe_raw: dict[str, Any] = {
        "name": name, "data": {"examples": [str(examples_file.resolve())]},
        "metric": {"name": metric.value}, "bar": bar_c.value}
    if corpus is not None:
        probe_raw["corpus"] = {"paths": [str(corpus.resolve())]}
    if tools is not None:
        probe_raw["tools"] = {"file": str(tools.resolve())}
    probe = parse_task(probe_raw, folder.resolve(), folder / TASK_FILE)
    planned = len(ladder_for(probe))
    split, split_why, cap, rep = _split(examples, probe, planned)
    if model_backend and (model_backend, model_name or EMBEDDED) != ("local", EMBEDDED):
        model = {"backend": model_backend, "name": model_name or (
            EMBEDDED if model_backend == "llamacpp" else model_backend)}
        if model_path:
            model["path"] = Path(model_path).resolve().as_posix()  # read from any cwd
        model_why = (f"chosen at `ladder init`: backend {model_backend}, model {model['name']}"
                     + ("" if model_backend != "openai" else
                        "; the API key is read from OPENAI_API_KEY (set api_key_env to use "
                        "another variable, base_url for another server)"))
    else:
        model = {"backend": "local", "name": "smollm2-135m"}
        model_why = ("the embedded SmolLM2-135M-Instruct: runs on a CPU with no download; add "
                     "the models you are choosing between as more [models.*] tables")
    return Inference(
        name=name, kind=kind, examples=rel_examples, rows=loaded.rows_read,
        description=Choice(desc, "written from the inferred kind; it becomes the system "
                                 "prompt, so say what the task is in your own words"),
        metric=metric, bar=bar_c, split=split, split_why=split_why, max_test=cap,
        max_tokens=_max_tokens(outputs, kind), labels=labels, schema=schema,
        corpus=rel_corpus, tools=rel_tools, model=model, model_why=model_why, power=rep)


def _toml(value: Any) -> str:
    """A TOML literal for a str, number, bool or list of them (JSON quoting is valid TOML
    for these)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _comment(text: str, width: int = 96) -> list[str]:
    """`text` as `# ` comment lines of at most `width` characters."""
    lines, cur = [], "#"
    for word in text.split():
        if len(cur) + 1 + len(word) > width and cur != "#":
            lines.append(cur)
            cur = "#"
        cur += " " + word
    return lines + [cur]


def render_toml(inf: Inference) -> str:
    """The task file: every value preceded by the comment that says why it was chosen."""
    out = [f"# Written by `ladder init` from {inf.examples} ({inf.rows} rows, kind: "
           f"{inf.kind}). Edit freely; `ladder check` validates it.", ""]

    def put(key: str, c: Choice) -> None:
        out.extend(_comment(c.why))
        out.append(f"{key} = {_toml(c.value)}")

    put("name", Choice(inf.name, "the task folder's name"))
    put("description", inf.description)
    put("bar", inf.bar)
    out += ["", "[data]", "# the examples file as given, relative to this folder",
            f"examples = [{_toml(inf.examples)}]", "", "[split]"]
    out.extend(_comment(inf.split_why))
    for k in ("train", "dev", "test"):
        out.append(f"{k} = {_toml(inf.split[k])}")
    out += ["# the split is a hash of (seed, id): adding rows never moves existing ones",
            "seed = 0"]
    if inf.max_test is not None:
        put("max_test", inf.max_test)
    out += ["", "[metric]"]
    put("name", inf.metric)
    if inf.labels is not None:
        put("labels", inf.labels)
    if inf.schema is not None:
        out.append("# inferred from the outputs: keys seen in every row are required")
        out.append('schema = "schema.json"')
    out += ["", "[generation]"]
    put("max_tokens", inf.max_tokens)
    out += ["# greedy decoding: the same input gives the same answer", "temperature = 0.0"]
    if inf.corpus is not None:
        out += ["", "[corpus]", "# the documents given with --corpus; build the index with "
                "`ladder index`", f"paths = [{_toml(inf.corpus)}]", "", "[retrieval]",
                "# four chunks fit the embedded model's context; hybrid = dense + BM25",
                "k = 4", 'mode = "hybrid"']
    if inf.tools is not None:
        out += ["", "[tools]", "# the tool schemas given with --tools (OpenAI format)",
                f"file = {_toml(inf.tools)}"]
    out += ["", "[models.default]"]
    out.extend(_comment(inf.model_why))
    for k, v in inf.model.items():
        out.append(f"{k} = {_toml(v)}")
    return "\n".join(out) + "\n"


@dataclass
class InitResult:
    """What `init_task` wrote and what the checks found."""

    task_file: Path
    inference: Inference
    prep: Prepared
    next_command: str


def init_task(folder: Path, examples_file: Path, *, corpus: Path | None = None,
              tools: Path | None = None, bar: float | None = None, force: bool = False,
              model_backend: str | None = None, model_path: str | None = None,
              metric: str | None = None, labels: list[str] | None = None,
              model_name: str | None = None) -> InitResult:
    """Write `folder/task.toml` (and `schema.json` for JSON outputs) inferred from
    `examples_file`, then run the checks. Refuses to overwrite a task file unless `force`."""
    target = folder / TASK_FILE
    if target.exists() and not force:
        raise LadderError(f"{target} exists; pass --force to overwrite it")
    for what, p in (("examples", examples_file), ("corpus", corpus), ("tools", tools)):
        if p is not None and not p.exists():
            raise LadderError(f"{p}: {what} not found")
    if bar is not None and not 0 <= bar <= 1:
        raise LadderError(f"--bar must be between 0 and 1, got {bar}")
    folder.mkdir(parents=True, exist_ok=True)
    inf = infer_task(folder, examples_file, corpus=corpus, tools=tools, bar=bar,
                     model_backend=model_backend, model_path=model_path, metric=metric,
                     labels=labels, model_name=model_name)
    if inf.schema is not None:
        (folder / "schema.json").write_text(json.dumps(inf.schema, indent=2) + "\n",
                                            encoding="utf-8")
    target.write_text(render_toml(inf), encoding="utf-8")
    task = load_task(folder)
    prep = prepare(task, skip_bad_rows=True)
    shown = folder.as_posix()
    if prep.problems:
        nxt = f"ladder check {shown}  # fix the bad rows, or run with --skip-bad-rows"
    elif corpus is not None:
        nxt = f"ladder index {shown} && ladder run {shown}"
    else:
        nxt = f"ladder run {shown}"
    return InitResult(target, inf, prep, nxt)
