"""task.toml validation: every mistake is a LadderError that names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_ladder.errors import LadderError
from llm_ladder.task import load_task

MINIMAL = """
name = "demo"
[data]
examples = ["data/rows.jsonl"]
"""


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "task.toml"
    f.write_text(text, encoding="utf-8")
    return f


def error_of(path: Path) -> str:
    with pytest.raises(LadderError) as info:
        load_task(path)
    return str(info.value)


def test_valid_minimal_task_gets_defaults(tmp_path):
    write(tmp_path, MINIMAL)
    task = load_task(tmp_path)
    assert task.name == "demo"
    assert task.data.examples == ["data/rows.jsonl"]
    assert task.data.test is None
    assert task.data.id_field == "id"
    assert (task.split.train, task.split.dev, task.split.test) == (0.6, 0.1, 0.3)
    assert task.split.seed == 0
    assert task.metric.name == "normalized_match"
    assert task.bar is None
    assert list(task.models) == ["default"]
    assert task.models["default"].backend == "local"
    assert task.root == tmp_path.resolve()
    assert task.path("data/rows.jsonl") == tmp_path.resolve() / "data" / "rows.jsonl"
    assert task.state_dir == tmp_path.resolve() / ".ladder"


def test_load_by_toml_path_and_full_task(tmp_path):
    f = tmp_path / "other.toml"
    f.write_text(MINIMAL + """
[split]
train = 0.5
dev = 0.25
test = 0.25
seed = 7
max_test = 20
[metric]
name = "accuracy"
labels = ["a", "b"]
schema = "schema.json"
[models.big]
backend = "openai"
name = "gpt-x"
""", encoding="utf-8")
    task = load_task(f)
    assert (task.split.train, task.split.dev, task.split.test) == (0.5, 0.25, 0.25)
    assert task.split.seed == 7 and task.split.max_test == 20
    assert task.metric.labels == ["a", "b"]
    assert task.metric.schema_file == "schema.json"
    assert task.model("big").backend == "openai"
    with pytest.raises(LadderError, match="unknown model 'nope'.*known: big"):
        task.model("nope")


def test_unknown_top_level_key_names_key_and_file(tmp_path):
    f = write(tmp_path, MINIMAL.replace('name = "demo"', 'name = "demo"\nnmae = "typo"'))
    msg = error_of(tmp_path)
    assert str(f) in msg
    assert "unknown key 'nmae'" in msg


def test_unknown_nested_key_names_dotted_key_and_file(tmp_path):
    f = write(tmp_path, MINIMAL + "[split]\ntain = 0.5\n")
    msg = error_of(tmp_path)
    assert str(f) in msg
    assert "unknown key 'split.tain'" in msg


def test_unknown_key_inside_a_model_table(tmp_path):
    f = write(tmp_path, MINIMAL + '[models.default]\nbackend = "local"\nbatchsize = 4\n')
    msg = error_of(tmp_path)
    assert str(f) in msg
    assert "unknown key 'models.default.batchsize'" in msg


@pytest.mark.parametrize("drop,key", [('name = "demo"\n', "name"),
                                      ('[data]\nexamples = ["data/rows.jsonl"]\n', "data")])
def test_missing_required_key(tmp_path, drop, key):
    assert drop in MINIMAL
    f = write(tmp_path, MINIMAL.replace(drop, ""))
    msg = error_of(tmp_path)
    assert str(f) in msg
    assert f"missing required key '{key}'" in msg


def test_empty_examples_list_is_rejected(tmp_path):
    write(tmp_path, 'name = "demo"\n[data]\nexamples = []\n')
    msg = error_of(tmp_path)
    assert "'data.examples'" in msg


def test_split_fractions_must_sum_to_one(tmp_path):
    f = write(tmp_path, MINIMAL + "[split]\ntrain = 0.5\ndev = 0.1\ntest = 0.3\n")
    msg = error_of(tmp_path)
    assert str(f) in msg
    assert "'split'" in msg
    assert "must be 1.0, got 0.9" in msg


def test_split_fraction_out_of_range(tmp_path):
    write(tmp_path, MINIMAL + "[split]\ntrain = 1.5\ndev = -0.2\ntest = -0.3\n")
    msg = error_of(tmp_path)
    assert "'split.train'" in msg
    assert "'split.dev'" in msg


def test_wrong_type_names_the_key_and_value(tmp_path):
    write(tmp_path, MINIMAL + '[generation]\nmax_tokens = "many"\n')
    msg = error_of(tmp_path)
    assert "'generation.max_tokens'" in msg
    assert "'many'" in msg


def test_toml_syntax_error_names_file(tmp_path):
    f = write(tmp_path, 'name = "demo\n[data]\nexamples = ["x.jsonl"]\n')
    msg = error_of(tmp_path)
    assert msg.startswith(f"{f}: TOML syntax error")
    assert "line 1" in msg


def test_non_utf8_task_file(tmp_path):
    f = tmp_path / "task.toml"
    f.write_bytes(b'name = "caf\xe9"\n[data]\nexamples = ["x.jsonl"]\n')
    msg = error_of(tmp_path)
    assert msg.startswith(f"{f}: not UTF-8")
    assert "at byte 11" in msg


def test_missing_task_file(tmp_path):
    msg = error_of(tmp_path / "nowhere")
    assert msg == f"{tmp_path / 'nowhere' / 'task.toml'}: task file not found"
    msg = error_of(tmp_path / "absent.toml")
    assert msg == f"{tmp_path / 'absent.toml'}: task file not found"


def test_a_model_setting_the_backend_ignores_is_refused_by_name():
    """`dtype` on llama.cpp or `batch_size` on an OpenAI endpoint would do nothing: the model is
    not built, and the error names the setting and the backend."""
    from llm_ladder import plugins
    from llm_ladder.models import build_model, ignored_settings
    from llm_ladder.task import ModelConfig

    gguf = ModelConfig.model_validate({"backend": "llamacpp", "name": "gemma3-270m",
                                       "dtype": "bfloat16", "threads": 2})
    with pytest.raises(LadderError, match=r"llamacpp backend does not use `dtype`; remove it"):
        build_model(gguf)
    hosted = ModelConfig.model_validate({"backend": "openai", "name": "m", "batch_size": 32,
                                         "threads": 4, "base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(LadderError, match=r"`batch_size`, `threads`; remove them"):
        build_model(hosted)
    # what each backend does read passes, defaults never count as set
    vllm = ModelConfig.model_validate({"backend": "vllm", "name": "m", "concurrency": 8,
                                       "timeout_s": 5, "max_retries": 1, "dtype": "bfloat16"})
    assert ignored_settings(plugins.get("models", "vllm"), vllm) == []
    batched = ModelConfig.model_validate({"backend": "vllm", "name": "m", "batch_size": 2})
    assert ignored_settings(plugins.get("models", "vllm"), batched) == ["batch_size"]
    local = ModelConfig.model_validate({"backend": "local", "batch_size": 4, "dtype": "float32"})
    assert ignored_settings(plugins.get("models", "local"), local) == []
    assert ignored_settings(plugins.get("models", "openai"), ModelConfig(backend="openai")) == []


def test_retrieval_ann_settings_reach_the_lancedb_store_and_are_refused_elsewhere(tmp_path):
    from llm_ladder.rag.index import open_store

    corpus = '\n[corpus]\npaths = ["docs"]\n'
    write(tmp_path, MINIMAL + corpus + "[retrieval]\nnprobes = 90\nrefine_factor = 0\n")
    store = open_store(load_task(tmp_path), "test-embedder", 8)
    assert (store.nprobes, store.refine_factor) == (90, 0)
    store.close()
    write(tmp_path, MINIMAL + corpus + 'store = "pgvector"\npg_url_env = "PG"\n'
          "[retrieval]\nnprobes = 90\n")
    assert "retrieval.nprobes tunes LanceDB's ANN index" in error_of(tmp_path)
    write(tmp_path, MINIMAL + "[retrieval]\nrefine_factor = 5\n")
    assert "retrieval.refine_factor" in error_of(tmp_path)
    write(tmp_path, MINIMAL + corpus + "[retrieval]\nnprobes = 0\n")
    assert "'retrieval.nprobes'" in error_of(tmp_path)
