"""`lora-tools` with the real SmolLM2-135M on a slice of BFCL (Apache 2.0): it trains on the
exact request the `tool-use` rung sends (each example's offered functions, the JSON protocol)
with the reference call as the target, never on a test example, and is scored on the test
split by the same `tool_call` metric as the prompted tool rungs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_ladder import climb
from llm_ladder.finetune.data import IGNORE
from llm_ladder.session import open_session

pytestmark = pytest.mark.slow
BFCL = Path(__file__).resolve().parents[1] / "examples" / "bfcl-tools"


def bfcl_slice(folder: Path, n: int = 21) -> Path:
    (folder / "data").mkdir(parents=True)
    rows = (BFCL / "data" / "calls.jsonl").read_text(encoding="utf-8").splitlines()
    # the three categories, interleaved, so train and test both hold calls and refusals
    cats: dict[str, list[str]] = {}
    for r in rows:
        cats.setdefault(json.loads(r)["meta"]["category"], []).append(r)
    mixed = [r for group in zip(*cats.values(), strict=False) for r in group][:n]
    (folder / "data" / "calls.jsonl").write_text("\n".join(mixed) + "\n", encoding="utf-8")
    toml = (BFCL / "task.toml").read_text(encoding="utf-8")
    toml = toml.replace("max_test = 30", "max_test = 3").replace("max_tokens = 64",
                                                                  "max_tokens = 32")
    (folder / "task.toml").write_text(toml + """
[finetune]
epochs = 1
batch_size = 4
learning_rate = 0.002
r = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]
min_examples = 10
""", encoding="utf-8")
    return folder


def test_lora_tools_trains_on_the_tool_use_request_and_is_scored_like_the_tool_rungs(
        tmp_path, monkeypatch):
    import llm_ladder.rungs.finetune as ft
    from llm_ladder.rungs.tools import ToolSetup

    task = bfcl_slice(tmp_path / "bfcl")
    session = open_session(task, rungs=["tool-use", "lora-tools"])
    test_ids = {e.id for e in session.prep.splits.test}
    captured: dict = {}
    real_tune = ft.tune

    def spy(ctx_, rung, prompt, train, base_key=None, extra=None):
        captured["train"], captured["prompt"] = train, prompt
        return real_tune(ctx_, rung, prompt, train, base_key, extra)

    monkeypatch.setattr(ft, "tune", spy)
    result = climb(task, run_all=True, report=False, session=session)
    rows = {s["rung"]: s for s in result.rungs}
    assert set(rows) == {"tool-use", "lora-tools"}
    assert rows["lora-tools"]["n"] == rows["tool-use"]["n"] == len(test_ids)
    assert rows["lora-tools"]["metric"] == rows["tool-use"]["metric"] == "tool_call"
    assert rows["lora-tools"]["one_time"]["seconds"] > 0
    # at inference too the tuned model gets each example's offered functions, exactly the
    # tool rung's request (it once got the bare request and refused every test example)
    sent = {r: {p["example_id"]: p["messages"]
                for p in session.store.predictions(rows[r]["run_id"])} for r in rows}
    assert sent["lora-tools"] == sent["tool-use"]
    assert all("Tools:" in json.dumps(m) for m in sent["lora-tools"].values())
    train = captured["train"]
    assert train and not {e.id for e in train} & test_ids
    # the training prompt is exactly the request the tool rung sends for that example
    setup = ToolSetup(session.task)
    for ex in train[:5]:
        original = next(o for o in session.prep.splits.train if o.id == ex.id)
        assert ex.input == setup.request(original, False, []).messages
        assert captured["prompt"].prepare(ex.input)[0] == ex.input
    calls = [e for e in train if e.output.startswith("{")]
    refusals = [e for e in train if not e.output.startswith("{")]
    assert calls and refusals  # BFCL irrelevance rows teach "no call"
    assert all(json.loads(e.output)["name"] for e in calls)
    adapter = next((task / ".ladder" / "adapters").glob("[0-9a-f]*"))
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["rung"] == "lora-tools"
    assert not set(manifest["data"]["train_ids"]) & test_ids


def test_the_target_tokens_are_the_call_only():
    """Completion-only loss: the labels cover the call text (and end of turn), not the
    request with its function listing."""
    from transformers import AutoTokenizer

    from llm_ladder.finetune.data import encode
    from llm_ladder.models.local import resolve_weights

    tok = AutoTokenizer.from_pretrained(resolve_weights("smollm2-135m", None))
    call = '{"name": "math_factorial", "arguments": {"number": 5}}'
    request = [{"role": "user", "content": "Tools:\n- math_factorial(number)\n\nRequest: 5!"}]
    ids, labels = encode(tok, request, call)
    target = tok.decode([t for t in labels if t != IGNORE])
    assert target.startswith(call) and "Tools:" not in target
