"""int8 sentence embeddings on ONNX Runtime: the `embedder_dtype = "int8"` path.

A sentence-transformers model's transformer module is exported once to ONNX with PyTorch's
own exporter, its matrix multiplications quantized to int8 by ONNX Runtime's dynamic
quantization (weights per output channel, activations per call; the feed-forward down
projections stay float32, `_narrowing`), and the file cached under
the llm-ladder cache (`LADDER_CACHE`, default ~/.cache/llm-ladder/embedders/), keyed by the
weights file and the library versions; it is written to a temporary name and renamed, so a
killed export is never used. Tokenization and everything after the transformer (pooling,
normalization) stay the model's own sentence-transformers modules, so the vectors differ from
float32 only by the quantization. On the AVX2 machine this encodes the FAQ corpus ~1.5x
faster than float32 `encode` with retrieval scores within a point (docs/benchmarks.md, RAG);
bfloat16 is the faster choice where the CPU has native bf16. Skips: static (calibrated)
quantization, ONNX graph fusions (measured no faster here), GPUs, models whose first module
is not a Hugging Face transformer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from llm_ladder.errors import LadderError, require
from llm_ladder.models.local import file_sha256

FORMAT = 2  # bump when the export or the quantization recipe changes


class Int8Encoder:
    """Encodes texts with `st_model`'s tokenizer and modules around an int8 ONNX transformer."""

    def __init__(self, st_model: Any, weights: Path, cache: Path, threads: int, label: str):
        self.ort = require("onnxruntime", "onnx")
        self.torch = require("torch", "local")
        self.st = st_model
        first = st_model[0]
        if not hasattr(first, "auto_model"):
            raise LadderError(f"embedder dtype 'int8' needs a transformer as the model's first "
                              f"module; this one starts with {type(first).__name__}")
        self.path = quantized_file(st_model, weights, cache, label)
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = threads  # the same threads as torch's encode
        options.inter_op_num_threads = 1
        try:
            self.session = self.ort.InferenceSession(str(self.path), options,
                                                     providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types, not importable by name
            raise LadderError(f"{self.path}: ONNX Runtime cannot load this cached int8 "
                              f"embedder ({str(e)[:200]}); delete the file to export it "
                              "again") from None
        self.inputs = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Sentence embeddings of one batch, as the model's own modules pool them."""
        torch = self.torch
        features = _tokenize(self.st, texts)
        hidden = self.session.run(None, {k: features[k].numpy().astype(np.int64)
                                         for k in self.inputs})[0]
        features["token_embeddings"] = torch.from_numpy(hidden)
        with torch.inference_mode():
            for module in list(self.st)[1:]:
                features = module(features)
        return features["sentence_embedding"].float().numpy()


def _tokenize(st_model: Any, texts: list[str]) -> dict[str, Any]:
    # sentence-transformers 6 renamed `tokenize` to `preprocess`
    method = getattr(st_model, "preprocess", None) or st_model.tokenize
    return method(texts)


def quantized_file(st_model: Any, weights: Path, cache: Path, label: str) -> Path:
    """The cached int8 ONNX file of `st_model` (exported and quantized on first use)."""
    # keyed by the weights' bytes, not their path: the same model in another venv or
    # reinstalled reuses the export (hashed once per process)
    files = sorted(weights.rglob("*.safetensors"))
    stamp = ":".join(f"{f.relative_to(weights)}:{file_sha256(f)}" for f in files)
    stamp += f":{version('torch')}:{version('onnxruntime')}:{FORMAT}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    target = cache / "embedders" / f"{safe}-int8-{key}.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{target.stem}.tmp{os.getpid()}"
    f32, int8 = target.with_name(f"{tmp}.f32.onnx"), target.with_name(f"{tmp}.int8.onnx")
    try:
        _export(st_model, f32)
        quantization = require("onnxruntime.quantization", "onnx")
        logging.disable(logging.WARNING)  # its advice to pre-process, printed on every call
        try:
            quantization.quantize_dynamic(f32, int8, weight_type=quantization.QuantType.QInt8,
                                          per_channel=True, nodes_to_exclude=_narrowing(f32))
        finally:
            logging.disable(logging.NOTSET)
        os.replace(int8, target)  # atomic: a killed export never leaves a file that is used
    except (RuntimeError, ValueError, TypeError) as e:  # the exporter's and quantizer's errors
        raise LadderError(f"embedder {label!r} cannot be exported to int8 ONNX "
                          f"({type(e).__name__}: {str(e)[:200]}); use embedder_dtype "
                          "'float32' or 'bfloat16'") from None
    finally:
        f32.unlink(missing_ok=True)
        int8.unlink(missing_ok=True)
    return target


def _narrowing(path: Path) -> list[str]:
    """The MatMuls whose weight narrows the width (the feed-forward down projections): they
    stay float32. Their input comes out of the activation, whose outliers a per-tensor int8
    scale handles worst; quantizing them too cost 1.4 points of recall@5 on the FAQ
    benchmark, keeping them cost about a fifth of the speed-up (docs/benchmarks.md, RAG)."""
    onnx = require("onnx", "onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(shapes.get(
        n.input[1], [])) == 2 and shapes[n.input[1]][0] > shapes[n.input[1]][1]]


def _export(st_model: Any, path: Path) -> None:
    """The transformer module to ONNX in float32: token ids in, token embeddings out."""
    torch = require("torch", "local")
    require("onnx", "onnx")
    sample = _tokenize(st_model, ["an example sentence", "a second, longer example sentence"])
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
    auto = st_model[0].auto_model

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = auto

        def forward(self, *args: Any) -> Any:
            return self.model(**dict(zip(names, args, strict=True))).last_hidden_state

    dynamic = {k: {0: "batch", 1: "tokens"} for k in [*names, "token_embeddings"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings
        torch.onnx.export(Hidden().eval(), tuple(sample[k] for k in names), str(path),
                          input_names=names, output_names=["token_embeddings"],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
