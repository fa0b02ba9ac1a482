"""Embedding through a real OpenAI-compatible /v1/embeddings server (llama.cpp's), and the
index refusing to mix embedders."""

import json
import subprocess

from helpers import LADDER
from servers import llama_server
from test_rag_cli import make_task


def test_index_with_server_embedder_then_refuse_another(tmp_path):
    task = make_task(tmp_path / "t")
    toml = task / "task.toml"
    plain = toml.read_text()
    with llama_server(alias="smollm2-embed", extra=["--embedding", "True"]) as base:
        toml.write_text(plain.replace(
            "[corpus]\n",
            f'[corpus]\nembedder = "smollm2-embed"\nembedder_base_url = "{base}"\n'))
        proc = subprocess.run([*LADDER, "index", str(task), "--json"], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["store"]["embedder"] == "smollm2-embed"
        assert report["store"]["dim"] == 576  # SmolLM2-135M's hidden size, mean-pooled
        assert report["store"]["count"] == report["chunks"] >= 5

    toml.write_text(plain)  # back to the embedded MiniLM: the index must refuse it
    proc = subprocess.run([*LADDER, "index", str(task)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "smollm2-embed" in proc.stderr and "all-MiniLM-L6-v2" in proc.stderr
