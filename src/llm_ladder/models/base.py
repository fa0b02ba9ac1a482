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
    """Generation settings for one call: token cap, temperature, stop strings, native tools,
    anti-loop controls and an output constraint (docs/generation.md)."""

    max_tokens: int = 64
    temperature: float = 0.0
    stop: list[str] | None = None
    # OpenAI-format tool schemas for backends with native tool calls (see llm_ladder.tools)
    tools: list[dict[str, Any]] | None = None
    # Anti-loop controls, with transformers' names and rules, applied to the answer's own
    # tokens (never the prompt's). None = the backend's default (ANTI_LOOP_DEFAULTS for the
    # local and llamacpp backends; the openai backend sends nothing and refuses a set value).
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    # Constrained decoding: the answer is exactly one of `choices`, or JSON valid under
    # `json_schema`. A backend that cannot enforce it raises LadderError, never ignores it.
    choices: list[str] | None = None
    json_schema: dict[str, Any] | None = None


# The embedded backends' anti-loop settings when the task leaves them unset, chosen by
# measuring the FAQ and RAG examples with and without them (docs/generation.md): n-gram
# blocking removed the RAG answers' loops (15/30 -> 0/30) at no measured cost in token F1.
ANTI_LOOP_DEFAULTS: dict[str, float | int] = {"repetition_penalty": 1.0,
                                              "no_repeat_ngram_size": 3}


def anti_loop(params: GenParams) -> tuple[float, int]:
    """The (repetition_penalty, no_repeat_ngram_size) to apply: the call's, else the defaults.
    1.0 and 0 mean off."""
    rp = params.repetition_penalty
    ng = params.no_repeat_ngram_size
    return (float(ANTI_LOOP_DEFAULTS["repetition_penalty"] if rp is None else rp),
            int(ANTI_LOOP_DEFAULTS["no_repeat_ngram_size"] if ng is None else ng))


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
