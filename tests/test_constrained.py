"""Constrained decoding: with the real local model (llguidance) and llama.cpp (GBNF) every
output is one of the labels / JSON valid under the schema; the rungs join the default ladder
for label and JSON tasks only; a backend that cannot constrain refuses clearly."""

from __future__ import annotations

import json

import jsonschema
import pytest
from test_climb import ROWS

from llm_ladder.errors import LadderError
from llm_ladder.models.base import GenParams
from llm_ladder.models.constrain import constraint_of, gbnf_choices
from llm_ladder.rungs.base import get_rung, ladder_for
from llm_ladder.session import open_session
from llm_ladder.task import load_task
from llm_ladder.testing import write_task

# labels sharing prefixes, so a half-written label is a real risk
LABELS = ["permit", "permit-free", "notification", "other"]
ASK = [[{"role": "user", "content": q}] for q in (
    "Do I need a permit for a garden shed? Answer permit or permit-free.",
    "Tell me a long story about dragons.",
    "What is 2 + 2?",
)]
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "enum": ["area", "volume"]},
    "arguments": {"type": "object", "properties": {"base": {"type": "integer"}},
                  "required": ["base"], "additionalProperties": False}},
    "required": ["name", "arguments"], "additionalProperties": False}


@pytest.fixture(scope="module")
def lcpp():
    from llm_ladder.models.llamacpp import LlamaCppModel

    return LlamaCppModel(threads=2)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "llamacpp"])
def test_real_backend_outputs_only_labels(backend, smol, lcpp):
    model = smol if backend == "local" else lcpp
    gens = model.generate(ASK, GenParams(max_tokens=8, choices=LABELS))
    assert [g.error for g in gens] == [None] * len(ASK)
    assert all(g.text in LABELS for g in gens), [g.text for g in gens]
    if backend == "local":  # llama-cpp-python runs to max_tokens after the grammar ends
        assert all(g.finish_reason == "stop" for g in gens)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "llamacpp"])
def test_real_backend_outputs_valid_json_of_the_schema(backend, smol, lcpp):
    model = smol if backend == "local" else lcpp
    gens = model.generate(ASK[:2], GenParams(max_tokens=48, json_schema=SCHEMA))
    for g in gens:
        jsonschema.validate(json.loads(g.text), SCHEMA)


def test_the_rungs_join_label_and_json_tasks_only(tmp_path):
    label = load_task(write_task(tmp_path / "labels", ROWS, answers=["alpha"]))
    assert ladder_for(label)[5:7] == ["constrained", "few-shot-constrained"]
    free = load_task(write_task(tmp_path / "free", ROWS, answers=["alpha"], metric="token_f1"))
    assert not {"constrained", "few-shot-constrained"} & set(ladder_for(free))
    folder = write_task(tmp_path / "json", [dict(r, output="{}") for r in ROWS],
                        answers=["{}"], metric="json_valid")
    assert "constrained" not in ladder_for(load_task(folder))  # no schema: nothing to use
    (folder / "schema.json").write_text(json.dumps(SCHEMA))
    toml = folder / "task.toml"
    toml.write_text(toml.read_text().replace('name = "json_valid"\n',
                                             'name = "json_valid"\nschema = "schema.json"\n'))
    assert "few-shot-constrained" in ladder_for(load_task(folder))


def test_the_rung_constrains_to_the_task_labels(tmp_path):
    task = write_task(tmp_path / "t", ROWS, answers=["alpha"])
    prep = open_session(task).prep
    for name in ("constrained", "few-shot-constrained"):
        pipe = get_rung(name).build(prep.context())
        assert pipe.params.choices == ["alpha", "beta"] and pipe.params.json_schema is None
        assert pipe.settings["constraint"] == "labels"
        assert (pipe.params.repetition_penalty, pipe.params.no_repeat_ngram_size) == (1.0, 0)


def test_a_backend_that_cannot_constrain_refuses(tmp_path):
    pytest.importorskip("openai")
    from llm_ladder.models.openai import OpenAIModel

    m = OpenAIModel(name="x", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(LadderError, match="cannot constrain.*local, llamacpp"):
        m.generate(ASK[:1], GenParams(choices=LABELS))
    with pytest.raises(LadderError, match="JSON schema"):
        m.generate(ASK[:1], GenParams(json_schema=SCHEMA))


def test_bad_constraints_are_errors():
    with pytest.raises(LadderError, match="not both"):
        constraint_of(GenParams(choices=["a"], json_schema={}))
    with pytest.raises(LadderError, match="non-empty"):
        constraint_of(GenParams(choices=["a", ""]))
    assert gbnf_choices(['say "hi"', "a\\b"]) == 'root ::= "say \\"hi\\"" | "a\\\\b"\n'


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "llamacpp"])
def test_the_constraint_wins_over_ngram_blocking(backend, smol, lcpp):
    """The only label repeats tokens (", yes"), and every repeat is banned: the label is
    still written whole."""
    model = smol if backend == "local" else lcpp
    (g,) = model.generate(ASK[:1], GenParams(max_tokens=10, choices=["yes, yes, yes"],
                                             no_repeat_ngram_size=1))
    assert g.text == "yes, yes, yes", g.text
