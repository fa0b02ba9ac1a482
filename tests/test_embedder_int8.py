"""`embedder_dtype = "int8"`: MiniLM's transformer exported to ONNX, int8 on ONNX Runtime,
pooled by the model's own sentence-transformers modules. Real MiniLM from its package, real
onnxruntime, real LanceDB; the export is cached in a folder shared by this module's tests."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from llm_ladder import embedding, embedding_int8
from llm_ladder.errors import LadderError, MissingDependency
from llm_ladder.rag.stores import LanceStore
from llm_ladder.task import CorpusConfig

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("onnxruntime", reason="the `onnx` extra (make install-dev installs it)")

FAQ = Path(__file__).resolve().parents[1] / "examples/construction-faq/data/faq.jsonl"
ROWS = [json.loads(x) for x in FAQ.read_text(encoding="utf-8").splitlines()[:80]]
QUESTIONS = [r["input"] for r in ROWS]
ANSWERS = [r["meta"]["answer"] for r in ROWS]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ladder-cache")


@pytest.fixture(scope="module")
def pair(cache):
    old = os.environ.get("LADDER_CACHE")
    os.environ["LADDER_CACHE"] = str(cache)
    try:
        return embedding.Embedder(dtype="float32"), embedding.Embedder(dtype="int8")
    finally:
        if old is None:
            os.environ.pop("LADDER_CACHE")
        else:
            os.environ["LADDER_CACHE"] = old


def test_int8_vectors_are_unit_float32_close_to_float32_and_rank_alike(pair) -> None:
    f32, int8 = pair
    assert int8.dtype == "int8" and int8.name == "all-MiniLM-L6-v2@int8" and int8.dim == 384
    a, b = f32.embed(ANSWERS), int8.embed(ANSWERS)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert np.abs(np.linalg.norm(b, axis=1) - 1).max() < 1e-5
    cos = np.sum(a * b, axis=1)
    assert cos.min() > 0.97, cos.min()
    # each question's top answer: int8 picks what float32 picks (nearly always)
    top = [np.argmax(f32.embed(QUESTIONS) @ a.T, axis=1),
           np.argmax(int8.embed(QUESTIONS) @ b.T, axis=1)]
    assert np.mean(top[0] == top[1]) >= 0.9, np.mean(top[0] == top[1])
    assert int8.embed([]).shape == (0, 384)


def test_the_feed_forward_down_projections_stay_float32(pair) -> None:
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(pair[1]._int8.path)).graph
    kinds = [n.op_type for n in graph.node]
    assert kinds.count("MatMulInteger") + kinds.count("DynamicQuantizeMatMul") >= 30
    float_matmuls = [n.name for n in graph.node if n.op_type == "MatMul"
                     and n.input[1] in {t.name for t in graph.initializer}]
    assert len(float_matmuls) == 6 and all("output/dense" in n for n in float_matmuls)


def test_the_export_is_cached(pair, cache, monkeypatch) -> None:
    path = pair[1]._int8.path
    assert path.parent == cache / "embedders" and path.is_file()
    monkeypatch.setenv("LADDER_CACHE", str(cache))
    monkeypatch.setattr(embedding_int8, "_export", lambda *a: pytest.fail("exported again"))
    assert embedding.Embedder(dtype="int8")._int8.path == path  # reused, not re-exported


def test_the_same_weights_elsewhere_reuse_the_export(pair, cache, tmp_path, monkeypatch) -> None:
    """The export is keyed by the weights' bytes, not their path or time: a copy of the model
    folder (another venv, a reinstall) gets the file already exported."""
    import shutil

    from llm_ladder.embedding import DEFAULT_EMBEDDER, minilm_folder

    copy = tmp_path / "elsewhere"
    shutil.copytree(minilm_folder(), copy)
    for f in copy.rglob("*"):
        os.utime(f, ns=(1, 1))
    monkeypatch.setattr(embedding_int8, "_export", lambda *a: pytest.fail("exported again"))
    path = embedding_int8.quantized_file(pair[1].model, copy, cache, DEFAULT_EMBEDDER)
    assert path == pair[1]._int8.path


def test_a_killed_export_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    quantization = pytest.importorskip("onnxruntime.quantization")

    def killed(src, dst, **_):
        Path(dst).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setenv("LADDER_CACHE", str(tmp_path))
    monkeypatch.setattr(quantization, "quantize_dynamic", killed)
    with pytest.raises(KeyboardInterrupt):
        embedding.Embedder(dtype="int8")
    assert list((tmp_path / "embedders").iterdir()) == []  # no partial file, no leftovers


def test_a_model_the_exporter_refuses_is_a_clear_error(tmp_path, monkeypatch) -> None:
    def refuses(*a, **k):
        raise RuntimeError("Unsupported: ONNX export of operator foo")

    torch = pytest.importorskip("torch")
    monkeypatch.setenv("LADDER_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.onnx, "export", refuses)
    with pytest.raises(LadderError, match="cannot be exported to int8 ONNX.*operator foo"):
        embedding.Embedder(dtype="int8")
    assert list((tmp_path / "embedders").iterdir()) == []


def test_a_damaged_cached_file_is_a_clear_error(pair, tmp_path, monkeypatch) -> None:
    (tmp_path / "embedders").mkdir()
    (tmp_path / "embedders" / pair[1]._int8.path.name).write_bytes(b"not an onnx model")
    monkeypatch.setenv("LADDER_CACHE", str(tmp_path))
    with pytest.raises(LadderError, match="cannot load this cached int8.*delete the file"):
        embedding.Embedder(dtype="int8")


def test_an_index_built_in_float32_refuses_int8_queries(pair, tmp_path) -> None:
    f32, int8 = pair
    store = LanceStore(tmp_path / "index", f32.name, f32.dim)
    store.close()
    with pytest.raises(LadderError, match="all-MiniLM-L6-v2@int8.*rebuild the index"):
        LanceStore(tmp_path / "index", int8.name, int8.dim, create=False)


def test_without_onnxruntime_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(MissingDependency, match="onnx"):
        embedding.Embedder(dtype="int8")


def test_the_task_setting_reaches_the_embedder(pair, cache, monkeypatch) -> None:
    monkeypatch.setenv("LADDER_CACHE", str(cache))
    assert embedding.build_embedder(CorpusConfig(paths=["c"], embedder_dtype="int8")).dtype \
        == "int8"
    with pytest.raises(ValueError):
        CorpusConfig(paths=["c"], embedder_dtype="int4")
