"""The ChatModel protocol every backend implements, and the records it returns.

A backend takes a batch of chat requests and returns one Generation per request with the
text, tokens in/out, latency and an error (if any). Batching or concurrency is the backend's
business: the local model pads a batch through one forward pass, the OpenAI backend sends
requests concurrently. Nothing here retries; the HTTP backend does its own retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

Messages = list[dict[str, Any]]


@dataclass
class GenParams:
    """Generation settings for one call: token cap, temperature, stop strings, native tools."""

    max_tokens: int = 64
    temperature: float = 0.0
    stop: list[str] | None = None
    # OpenAI-format tool schemas for backends with native tool calls (see llm_ladder.tools)
    tools: list[dict[str, Any]] | None = None


@dataclass
class Generation:
    """One answer: the text, tokens in/out, latency, why it stopped, and an error if it failed."""

    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    finish_reason: str = "stop"
    error: str | None = None
    # native tool calls: [{"id", "name", "arguments": dict | str (when not valid JSON)}]
    tool_calls: list[dict[str, Any]] | None = None


@runtime_checkable
class ChatModel(Protocol):
    """One interface for every backend."""

    name: str
    context_length: int

    def generate(self, requests: list[Messages], params: GenParams) -> list[Generation]:
        """Answer each request; never raise for one bad request, set `error` instead."""
        ...

    def count_tokens(self, messages: Messages) -> int:
        """Prompt tokens for these messages, chat template included."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings worth storing with a run (never secrets)."""
        ...
