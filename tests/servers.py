"""Start real servers on loopback for tests and benchmarks, and stop them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request

from helpers import free_port


@contextlib.contextmanager
def llama_server(api_key: str | None = None, threads: int = 1, alias: str = "smollm2",
                 extra: list[str] | None = None):
    """llama.cpp's own OpenAI-compatible server (llama-cpp-python[server]) on 127.0.0.1."""
    from llm_ladder.models.local import smollm2_gguf

    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()),
           "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port),
           "--n_threads", str(threads), "--n_ctx", "2048", "--verbose", "False"]
    if api_key:
        cmd += ["--api_key", api_key]
    cmd += extra or []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                log = proc.stderr.read().decode()[-2000:]
                raise RuntimeError(f"llama.cpp server exited: {log}")
            try:
                req = urllib.request.Request(f"{base}/models",
                                             headers={"Authorization": f"Bearer {api_key}"}
                                             if api_key else {})
                urllib.request.urlopen(req, timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
