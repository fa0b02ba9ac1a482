"""The optimized-prompt rung and its search, with scripted models (fast, no weights).

Checked: the call budget holds exactly (the trace's count is the model's count, never above
the budget); no test input ever reaches the search; the search is reproducible from its seed;
a killed search resumes without repeating a call; a finished search is reused (and served)
without calling the model; a known answer only the search can find (the instruction after
the input, a placement no fixed template uses); and a search that overfits dev, which the
test split and the ladder's paired test expose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_ladder import optimize, plugins
from llm_ladder.data import Messages
from llm_ladder.errors import LadderError
from llm_ladder.ladder import climb
from llm_ladder.models.base import Generation, GenParams
from llm_ladder.rungs.base import get_rung
from llm_ladder.serving.build import build_pipeline
from llm_ladder.session import prepare
from llm_ladder.store import Store
from llm_ladder.task import load_task
from llm_ladder.testing import ScriptedModel, write_task

LABELS = ["alpha", "beta", "gamma"]
SPLIT = "train = 0.5\ndev = 0.25\ntest = 0.25"


def rows(n: int = 48) -> list[dict[str, Any]]:
    return [{"id": f"q{i:03d}", "input": f"question number {i:03d} about thing {i * 7 % 13}",
             "output": LABELS[i % 3]} for i in range(n)]


def answers(n: int = 48) -> dict[str, str]:
    return {r["input"]: r["output"] for r in rows(n)}


def make_task(tmp: Path, name: str = "t", extra: str = "", n: int = 48, bar: float = 0.5
              ) -> Path:
    return write_task(tmp / name, rows(n), answers=answers(n), split=SPLIT, bar=bar,
                      extra=extra)


def user_text(msgs: Messages) -> str:
    return "\n".join(str(m.get("content") or "") for m in msgs if m["role"] == "user")


class Picky(ScriptedModel):
    """Right (the scripted answer) only when the instruction follows the input in the last
    user turn; otherwise a chatty reply that names no label."""

    def _answer(self, messages: Messages) -> str:
        last = [m for m in messages if m["role"] == "user"][-1]["content"]
        if last.rstrip().endswith("and nothing else.") and "\n\n" in last:
            return super()._answer(messages)
        return "Let me think about that question."


class DevLover(ScriptedModel):
    """Right on every dev input under the 'expert' instruction; elsewhere right on the
    same inputs whatever the prompt: a prompt that only helps on dev."""

    dev_inputs: set[str] = set()
    easy: set[str] = set()

    def _answer(self, messages: Messages) -> str:
        last = [m for m in messages if m["role"] == "user"][-1]["content"]
        inp = next((k for k in self.answers if k in last), "")
        system = " ".join(str(m["content"]) for m in messages if m["role"] == "system")
        right = inp in self.easy or (inp in self.dev_inputs and "expert" in system + last)
        return self.answers[inp] if right and inp else "no idea"


class Failing(ScriptedModel):
    """Dies (like a killed process) once `limit` requests were answered."""

    limit = 10**9

    def generate(self, requests: list[Messages], params: GenParams) -> list[Generation]:
        if len(self.calls) + len(requests) > self.limit:
            raise KeyboardInterrupt("killed")
        return super().generate(requests, params)


def context(folder: Path, model: Any, **kw: Any):
    task = load_task(folder)
    prep = prepare(task)
    return prep, prep.context(model=model, **kw)


def search_once(folder: Path, model: Any, **kw: Any):
    prep, ctx = context(folder, model, **kw)
    return prep, get_rung("optimized-prompt").build(ctx)


@pytest.mark.parametrize("budget", [30, 47, 120])
def test_budget_is_respected_exactly(tmp_path: Path, budget: int) -> None:
    folder = make_task(tmp_path, extra=f"[optimize]\nbudget_calls = {budget}\n")
    model = ScriptedModel(answers=answers())
    events: list[dict[str, Any]] = []
    _, pipe = search_once(folder, model, on_event=events.append)
    trace = optimize.find(folder / ".ladder", pipe.settings["search"])["trace"]
    assert trace["calls"] == len(model.calls) <= budget
    assert pipe.settings["search_calls"] == len(model.calls)
    # progress went out with the best dev score so far, and never past the budget
    progress = [e for e in events if "search_calls" in e]
    assert progress and all(e["search_calls"] <= budget for e in progress)
    assert progress[-1]["best_dev"] is not None and progress[-1].get("done")
    # the budget was used: what is left cannot pay for one more candidate on both halves
    assert budget - len(model.calls) < len(trace["dev_a"]) + len(trace["dev_b"])
    assert len(trace["candidates"]) >= 2 and trace["chosen"] in trace["finalists"]


def test_small_budgets_and_small_data(tmp_path: Path) -> None:
    # a budget too small for the dev split searches a seeded sample of dev (budget / 4)
    folder = make_task(tmp_path, extra="[optimize]\nbudget_calls = 12\n")
    model = ScriptedModel(answers=answers())
    _, pipe = search_once(folder, model)
    trace = optimize.find(folder / ".ladder", pipe.settings["search"])["trace"]
    assert len(trace["dev_a"]) + len(trace["dev_b"]) == 3 and len(model.calls) <= 12
    with pytest.raises(LadderError, match="budget_calls"):  # the schema refuses nonsense
        search_once(make_task(tmp_path, "u", extra="[optimize]\nbudget_calls = 5\n"),
                    ScriptedModel(answers=answers()))
    # too few examples to search: the fixed prompt, and the reason, instead of a failed climb
    events: list[dict[str, Any]] = []
    tiny = write_task(tmp_path / "tiny", rows(6), answers=answers(6),
                      split="train = 0.2\ndev = 0.0\ntest = 0.8")
    assert len(prepare(load_task(tiny)).splits.train) <= 2
    _, pipe = search_once(tiny, ScriptedModel(answers=answers()), on_event=events.append)
    assert pipe.settings["search"] is None and "at least 2 dev" in pipe.settings["skipped"]
    assert any("warning" in e for e in events)


def test_no_test_example_reaches_the_search(tmp_path: Path) -> None:
    folder = make_task(tmp_path, extra="[optimize]\nbudget_calls = 200\n")
    model = ScriptedModel(answers=answers())
    prep, pipe = search_once(folder, model)
    test_inputs = {e.input for e in prep.splits.test}
    assert test_inputs and model.calls
    seen = "\n".join(json.dumps(m) for m in model.calls)
    assert not [t for t in test_inputs if t in seen]
    stored = (folder / ".ladder" / "prompts").rglob("*.json")
    blob = "\n".join(p.read_text() for p in stored)
    assert not [t for t in test_inputs if t in blob]
    assert not {e.id for e in prep.splits.test} & set(pipe.settings["demo_ids"])


def test_reproducible_from_the_seed(tmp_path: Path) -> None:
    traces = []
    for name in ("a", "b"):
        folder = make_task(tmp_path, name, extra="[optimize]\nbudget_calls = 150\nseed = 3\n")
        model = ScriptedModel(answers=answers())
        _, pipe = search_once(folder, model)
        trace = optimize.find(folder / ".ladder", pipe.settings["search"])["trace"]
        traces.append((pipe.settings["prompt_id"], trace["candidates"], trace["demo_sets"],
                       [json.dumps(c) for c in model.calls]))
    assert traces[0] == traces[1]


def test_killed_search_resumes_without_repeating_calls(tmp_path: Path) -> None:
    extra = "[optimize]\nbudget_calls = 160\n"
    whole = ScriptedModel(answers=answers())
    _, ref = search_once(make_task(tmp_path, "whole", extra), whole)
    folder = make_task(tmp_path, "killed", extra)
    first = Failing(answers=answers())
    first.limit = 45
    with pytest.raises(KeyboardInterrupt):
        search_once(folder, first)
    assert list((folder / ".ladder" / "prompts").glob(".work-*/trace.json"))
    second = ScriptedModel(answers=answers())
    _, pipe = search_once(folder, second)
    assert len(first.calls) + len(second.calls) == len(whole.calls)
    assert first.calls + second.calls == whole.calls  # the same requests, none twice
    assert pipe.settings["prompt_id"] == ref.settings["prompt_id"]
    trace = optimize.find(folder / ".ladder", pipe.settings["search"])["trace"]
    assert trace["resumed"] == 1 and trace["calls"] == len(whole.calls)
    assert not list((folder / ".ladder" / "prompts").glob(".work-*"))


def test_same_search_is_reused_and_served_without_the_model(tmp_path: Path) -> None:
    folder = make_task(tmp_path, extra="[optimize]\nbudget_calls = 100\n")
    _, pipe = search_once(folder, ScriptedModel(answers=answers()))
    again = ScriptedModel(answers=answers())
    events: list[dict[str, Any]] = []
    _, pipe2 = search_once(folder, again, on_event=events.append)
    assert again.calls == [] and pipe2.settings["prompt_id"] == pipe.settings["prompt_id"]
    assert events == [{"reused_prompt": pipe.settings["prompt_id"],
                       "search": pipe.settings["search"]}]
    (folder / "answers.json").unlink()  # building the model now would fail: serving must not
    served, _ = build_pipeline(load_task(folder), "optimized-prompt")
    assert served.settings["prompt_id"] == pipe.settings["prompt_id"]
    assert served.prepare("hello")[0] == pipe.prepare("hello")[0]
    listed = optimize.stored_prompts(folder / ".ladder")
    assert [d["id"] for d in listed] == [pipe.settings["prompt_id"]]
    # another budget is another search
    text = (folder / "task.toml").read_text().replace("budget_calls = 100", "budget_calls = 99")
    (folder / "task.toml").write_text(text)
    other = ScriptedModel(answers=answers())
    search_once(folder, other)
    assert other.calls


@pytest.fixture
def backend():
    """Register scripted variants as backends for the length of a test."""
    added = []

    def register(name: str, cls: type) -> None:
        plugins.register("models", name, cls)
        added.append(name)

    yield register
    for name in added:
        plugins.unregister("models", name)


def set_backend(folder: Path, name: str) -> None:
    text = (folder / "task.toml").read_text().replace('backend = "scripted"',
                                                      f'backend = "{name}"')
    (folder / "task.toml").write_text(text)


def test_only_the_search_finds_the_fix(tmp_path: Path, backend) -> None:
    backend("picky", Picky)
    folder = make_task(tmp_path, n=90, bar=0.6,
                       extra="[optimize]\nbudget_calls = 400\nk = [0, 2]\n")
    set_backend(folder, "picky")
    result = climb(folder, rungs=["zero-shot", "system-prompt", "few-shot-random",
                                  "chain-of-thought", "optimized-prompt"],
                   run_all=True, report=True)
    q = {s["rung"]: s["quality"]["value"] for s in result.rungs}
    assert q["optimized-prompt"] == 1.0
    assert max(v for k, v in q.items() if k != "optimized-prompt") == 0.0
    assert result.recommendation["rung"] == "optimized-prompt"
    opt = next(s for s in result.rungs if s["rung"] == "optimized-prompt")
    assert opt["one_time"]["seconds"] >= 0 and "prompt search" in opt["one_time"]["what"]
    # the report shows the chosen prompt verbatim and the search trace
    doc = optimize.stored_prompts(folder / ".ladder")[0]
    assert doc["place"] == "user" and doc["name"] == "listed@user"
    html = Path(result.report["html"]).read_text(encoding="utf-8")
    assert "Optimized prompt" in html and "- alpha\n- beta\n- gamma" in html
    assert html.count("<tr><td>i") >= 8  # every instruction was tried (stage 1)


def test_overfitting_dev_is_exposed_by_the_test_split(tmp_path: Path, backend) -> None:
    backend("devlover", DevLover)
    folder = make_task(tmp_path, n=120, bar=0.3,
                       extra="[optimize]\nbudget_calls = 600\nk = [0]\n")
    set_backend(folder, "devlover")
    prep = prepare(load_task(folder))
    DevLover.dev_inputs = {e.input for e in prep.splits.dev}
    DevLover.easy = {r["input"] for i, r in enumerate(rows(120)) if i % 5 != 0}
    result = climb(folder, rungs=["system-prompt", "optimized-prompt"], run_all=True,
                   report=False)
    opt = next(s for s in result.rungs if s["rung"] == "optimized-prompt")
    doc = optimize.stored_prompts(folder / ".ladder")[0]
    assert "expert" in doc["instruction"]  # the search fell for dev
    assert doc["dev"]["all"] > doc["fixed_dev"]["A"] and doc["dev"]["all"] == 1.0
    q = {s["rung"]: s["quality"]["value"] for s in result.rungs}
    assert q["optimized-prompt"] == q["system-prompt"] < 1.0  # the test split shows it
    rec = result.recommendation
    assert rec["rung"] == "system-prompt"  # the cheaper rung stays: not shown better
    pair = next(c for c in rec["comparisons"] if {c["a"], c["b"]} ==
                {"system-prompt", "optimized-prompt"})
    assert not pair["diff"]
    assert opt["one_time"]["seconds"] >= 0


class Magic(ScriptedModel):
    """Right only under an instruction that says MAGIC (which only the proposer writes)."""

    def _answer(self, messages: Messages) -> str:
        system = " ".join(str(m["content"]) for m in messages if m["role"] == "system")
        return super()._answer(messages) if "MAGIC" in system else "hmm"


def test_a_stronger_model_proposes_instructions_from_dev_failures(tmp_path: Path,
                                                                 backend) -> None:
    backend("magic", Magic)
    proposals = tmp_path / "proposals.json"
    proposals.write_text(json.dumps(["MAGIC: reply with the label only.", "Be nice."]))
    folder = make_task(tmp_path, extra='[optimize]\nbudget_calls = 200\nk = [0]\n'
                       'proposer = "big"\n')
    set_backend(folder, "magic")  # the model searched for; the proposer is a scripted one
    with open(folder / "task.toml", "a", encoding="utf-8") as f:
        f.write(f'[models.big]\nbackend = "scripted"\npath = "{proposals.as_posix()}"\n')
    prep = prepare(load_task(folder))
    seen: list[Messages] = []
    original = ScriptedModel.generate

    def spy(self, requests, params):
        if self.answers == json.loads(proposals.read_text()):
            seen.extend(requests)
        return original(self, requests, params)

    ScriptedModel.generate = spy
    try:
        pipe = get_rung("optimized-prompt").build(prep.context(model=None))
    finally:
        ScriptedModel.generate = original
    assert pipe.settings["instruction"] == "proposed-1"
    assert pipe.settings["system"].startswith("MAGIC")
    assert len(seen) == 2  # two proposals, from dev failures only
    asked = "\n".join(json.dumps(m) for m in seen)
    assert not [e.input for e in prep.splits.test if e.input in asked]
    assert any(e.input in asked for e in prep.splits.dev)


def test_ladder_prompts_lists_and_shows_the_stored_prompt(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llm_ladder.cli import app

    folder = make_task(tmp_path, extra="[optimize]\nbudget_calls = 100\n")
    runner = CliRunner()
    empty = runner.invoke(app, ["prompts", str(folder)])
    assert empty.exit_code == 0 and "none yet" in empty.output
    _, pipe = search_once(folder, ScriptedModel(answers=answers()))
    pid = pipe.settings["prompt_id"]
    listed = runner.invoke(app, ["prompts", str(folder), "--json"])
    assert [d["id"] for d in json.loads(listed.output)] == [pid]
    shown = runner.invoke(app, ["prompts", str(folder), "--show", pid])
    assert shown.exit_code == 0, shown.output
    assert pipe.settings["system"].splitlines()[0] in shown.output and "chosen" in shown.output
    missing = runner.invoke(app, ["prompts", str(folder), "--show", "nope"])
    assert missing.exit_code != 0 and "no stored prompt 'nope'" in str(missing.exception)


def test_bootstrapped_demonstrations_are_tried_early(tmp_path: Path) -> None:
    # a budget for three candidates: the fixed prompt, then BootstrapFewShot's choice (the
    # base instruction with the most bootstrapped demonstrations), then one rewrite
    folder = make_task(tmp_path, extra="[optimize]\nbudget_calls = 40\n")
    model = ScriptedModel(answers=answers())
    _, pipe = search_once(folder, model)
    trace = optimize.find(folder / ".ladder", pipe.settings["search"])["trace"]
    assert list(trace["candidates"])[:2] == ["i0-d--k0", "i0-d0-k4"]
    assert trace["bootstrapped"] >= 1 and trace["candidates"]["i0-d0-k4"]["A"]
    demo_ids = trace["demo_sets"][0]
    assert all(trace["bootstrap"][i]["score"] == 1.0 for i in demo_ids
               if i in trace["bootstrap"])


KINDS = ["roof", "window", "fence", "garage", "swimming pool", "chimney", "balcony",
         "basement", "driveway", "solar panel", "heat pump", "sauna"]


def kind_rows(n: int = 96) -> list[dict[str, Any]]:
    return [{"id": f"k{i:03d}",
             "input": f"Request {i:03d}: may I put up a new {KINDS[i % 12]} at my house?",
             "output": f"permit-{KINDS[i % 12].replace(' ', '-')}"} for i in range(n)]


class KindMatcher(ScriptedModel):
    """Right only when an earlier user turn (a demonstration) asks about the same kind of
    thing as the input: no instruction helps, and a fixed set of k demonstrations covers at
    most k of the 12 kinds; demonstrations chosen per input cover every one."""

    def _answer(self, messages: Messages) -> str:
        users = [str(m.get("content") or "") for m in messages if m["role"] == "user"]
        kind = next((k for k in KINDS if k in users[-1]), None)
        if kind and any(kind in u for u in users[:-1]):
            return super()._answer(messages)
        return "no idea"


def test_only_per_input_demonstrations_find_the_fix(tmp_path: Path, backend) -> None:
    backend("kinds", KindMatcher)
    data = kind_rows()
    folder = write_task(tmp_path / "kinds", data, answers={r["input"]: r["output"] for r in data},
                        split=SPLIT, bar=0.9,
                        extra="[optimize]\nbudget_calls = 300\nk = [0, 2]\n[prompt]\n"
                              "few_shot_k = 4\n")
    set_backend(folder, "kinds")
    result = climb(folder, rungs=["system-prompt", "few-shot-random", "optimized-prompt"],
                   run_all=True, report=False)
    q = {s["rung"]: s["quality"]["value"] for s in result.rungs}
    assert q["optimized-prompt"] == 1.0
    assert q["system-prompt"] == 0.0 and q["few-shot-random"] < 0.5  # 4 fixed shots: 4 kinds
    doc = optimize.stored_prompts(folder / ".ladder")[0]
    assert doc["select"] == "nearest" and doc["demos"] == [] and doc["k"] == 2
    trace = optimize.read(folder / ".ladder", doc["id"])["trace"]
    assert trace["chosen"] == "i0-dn-k2" and trace["chosen_dev"]["B"] == 1.0
    fixed_sets = [c for k, c in trace["candidates"].items() if c["k"] and "-dn-" not in k]
    assert fixed_sets and all(sum(c["A"].values()) < len(c["A"]) for c in fixed_sets)
    # the pool is train only: no dev or test example, and every test prompt's demonstrations
    # come from it, chosen for that input (same kind)
    prep = prepare(load_task(folder))
    pool_ids = {d["id"] for d in doc["pool"]}
    assert pool_ids <= {e.id for e in prep.splits.train}
    assert not pool_ids & {e.id for e in prep.splits.test + prep.splits.dev}
    pool_inputs = {d["input"] for d in doc["pool"]}
    opt = next(s for s in result.rungs if s["rung"] == "optimized-prompt")
    preds = Store(folder / ".ladder" / "runs.db").predictions(opt["run_id"])
    assert len(preds) == len(prep.splits.test)
    for p in preds:
        demos = [m["content"] for m in p["messages"] if m["role"] == "user"][:-1]
        assert len(demos) == 2 and set(demos) <= pool_inputs
    # served: the stored prompt, its demonstrations chosen again per input, no search
    served, _ = build_pipeline(load_task(folder), "optimized-prompt")
    assert served.settings["select"] == "nearest" and served.settings["pool"] == len(pool_ids)
    msgs = served.prepare("Request 999: may I put up a new sauna at my house?")[0]
    shown = [m["content"] for m in msgs if m["role"] == "user"][:-1]
    assert len(shown) == 2 and all("new sauna at my house?" in u for u in shown)
