"""Any OpenAI-compatible chat server (vLLM, llama.cpp server, TGI, Ollama, hosted APIs).

Uses the official `openai` client for its retries with exponential backoff on 429, 5xx and
timeouts. Requests in a batch run concurrently on a bounded thread pool. The API key comes
from the environment variable named by `api_key_env` and is never logged, stored or shown:
error texts are scrubbed of it. Token counts come from the server's `usage`; before a call,
`count_tokens` can only estimate (4 characters per token), and says so in `describe`.
The chat API has no repetition penalty or n-gram blocking (frequency/presence penalties are a
different, additive rule) and no label-set constraint, so a call that sets
`repetition_penalty`, `no_repeat_ngram_size`, `choices` or `json_schema` is refused with a
LadderError rather than sent without them (docs/generation.md). `stream` streams one request
(`ladder serve`) with the client's `stream=True`; `stream_batch` runs several such streams at
once on threads, so the server behind batches them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llm_ladder.errors import LadderError, require
from llm_ladder.models.base import (
    Cancelled,
    Generation,
    GenParams,
    Messages,
    StreamEvent,
    stream_in_threads,
)
from llm_ladder.models.constrain import unsupported


class OpenAIModel:
    supports_tools = True  # GenParams.tools are sent as the request's `tools`

    def __init__(self, name: str, base_url: str | None = None, api_key_env: str | None = None,
                 concurrency: int = 4, timeout_s: float = 60.0, max_retries: int = 4,
                 context_length: int | None = None, **_: Any):
        openai = require("openai", "openai")
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise LadderError(f"model {name!r}: environment variable {api_key_env} is not set")
        self._secret = key
        self.name = name
        self.base_url = base_url
        self.concurrency = concurrency
        self.batch_size = concurrency
        self.context_length = context_length or 8192
        self.client = openai.OpenAI(base_url=base_url, api_key=key or "no-key",
                                    timeout=timeout_s, max_retries=max_retries)
        self.max_retries = max_retries

    def describe(self) -> dict[str, Any]:
        return {"backend": "openai", "name": self.name, "base_url": self.base_url,
                "concurrency": self.concurrency, "max_retries": self.max_retries,
                "token_counts_before_call": "estimated (4 chars/token)"}

    def count_tokens(self, messages: Messages) -> int:
        return sum(len(m.get("content") or "") for m in messages) // 4 + 4 * len(messages)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _one(self, messages: Messages, params: GenParams) -> Generation:
        t0 = time.perf_counter()
        try:
            extra = {"tools": params.tools, "tool_choice": "auto"} if params.tools else {}
            resp = self.client.chat.completions.create(
                model=self.name, messages=messages, max_tokens=params.max_tokens,
                temperature=params.temperature, stop=params.stop or None, seed=0, **extra)
        except Exception as e:  # after the client's own retries
            status = getattr(e, "status_code", None)
            msg = f"{type(e).__name__}" + (f" (HTTP {status})" if status else "") + f": {e}"
            return Generation("", 0, 0, time.perf_counter() - t0, "error", self._scrub(msg)[:500])
        latency = time.perf_counter() - t0
        choice = resp.choices[0]
        usage = resp.usage
        return Generation(choice.message.content or "", usage.prompt_tokens if usage else 0,
                          usage.completion_tokens if usage else 0, latency,
                          choice.finish_reason or "stop",
                          tool_calls=_tool_calls(choice.message) if params.tools else None)

    def _check(self, params: GenParams) -> None:
        unsupported("openai", params)
        set_ = [k for k in ("repetition_penalty", "no_repeat_ngram_size")
                if getattr(params, k) is not None]
        if set_:
            raise LadderError(f"model {self.name!r} (openai backend): {', '.join(set_)} cannot "
                              "be sent: the chat API has no such setting (frequency/presence "
                              "penalties are a different rule); remove it from [generation] "
                              "(docs/generation.md)")

    def stream(self, messages: Messages, params: GenParams) -> Iterator[str | Generation]:
        """One request with the client's `stream=True` (usage from the server's last chunk,
        `stream_options.include_usage`); the same refusals as `generate`. Closing the
        iterator closes the HTTP response, which stops a vLLM/llama.cpp server's generation."""
        self._check(params)
        if params.tools:
            yield self._one(messages, params)  # tool calls arrive whole
            return
        t0 = time.perf_counter()
        parts: list[str] = []
        n_in = n_out = 0
        reason = "stop"
        resp = None
        try:
            resp = self.client.chat.completions.create(
                model=self.name, messages=messages, max_tokens=params.max_tokens,
                temperature=params.temperature, stop=params.stop or None, seed=0, stream=True,
                stream_options={"include_usage": True})
            for chunk in resp:
                if chunk.usage:
                    n_in, n_out = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                for choice in chunk.choices or []:
                    reason = choice.finish_reason or reason
                    if choice.delta and choice.delta.content:
                        parts.append(choice.delta.content)
                        yield choice.delta.content
        except Exception as e:  # after the client's own retries (before the first byte)
            status = getattr(e, "status_code", None)
            msg = f"{type(e).__name__}" + (f" (HTTP {status})" if status else "") + f": {e}"
            yield Generation("".join(parts), n_in, n_out, time.perf_counter() - t0, "error",
                             self._scrub(msg)[:500])
            return
        finally:
            if resp is not None:
                resp.close()
        yield Generation("".join(parts), n_in, n_out, time.perf_counter() - t0, reason)

    def stream_batch(self, requests: list[Messages], params: GenParams,
                     cancelled: Cancelled) -> Iterator[StreamEvent]:
        """Several streamed requests at once, one HTTP stream each (the server batches)."""
        return stream_in_threads(self.stream, requests, params, cancelled)

    def generate(self, requests: list[Messages], params: GenParams) -> list[Generation]:
        self._check(params)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda m: self._one(m, params), requests))


def _tool_calls(message: Any) -> list[dict[str, Any]]:
    """The message's tool calls as {"id", "name", "arguments"}; arguments stay a string when
    the server sent invalid JSON (the tool loop reports that, it does not guess)."""
    out = []
    for call in getattr(message, "tool_calls", None) or []:
        fn = getattr(call, "function", None)
        if fn is None:
            continue
        raw = fn.arguments or "{}"
        try:
            args: Any = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            args = raw
        out.append({"id": getattr(call, "id", None) or f"call_{len(out)}", "name": fn.name,
                    "arguments": args})
    return out
