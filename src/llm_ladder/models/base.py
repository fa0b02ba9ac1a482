"""The ChatModel protocol every backend implements, and the records it returns.

A backend takes a batch of chat requests and returns one Generation per request with the
text, tokens in/out, latency and an error (if any). Batching or concurrency is the backend's
business: the local model pads a batch through one forward pass, the OpenAI backend sends
requests concurrently. Nothing here retries; the HTTP backend does its own retries.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
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


@runtime_checkable
class ServesAdapters(Protocol):
    """A backend whose server loads LoRA adapters at run time (models/vllm.py)."""

    def with_adapter(self, adapter_id: str, folder: str) -> ChatModel:
        """This model answering through the PEFT adapter in `folder`, named `adapter_id`."""
        ...


@runtime_checkable
class StreamsTokens(Protocol):
    """A backend that can stream one request's answer as it is generated (`ladder serve`).

    `stream` yields the answer's text deltas (str) as they are decoded, then exactly one
    Generation: the whole text (equal to the deltas joined), tokens in/out, latency and
    finish reason, the same as `generate([messages], params)` would return. Closing the
    iterator early (a client went away) stops generation. Stop strings are applied before a
    delta leaves: text that could still become a stop string is held back."""

    def stream(self, messages: Messages, params: GenParams) -> Iterator[str | Generation]:
        ...


Cancelled = Callable[[int], bool]  # is request i's client gone? (checked at every token)
StreamEvent = tuple[int, str | Generation]


@runtime_checkable
class StreamsBatches(Protocol):
    """A backend that streams several requests generated together (`ladder serve` under load).

    `stream_batch` yields (i, delta) as request i's text is decoded and (i, Generation) once,
    as soon as request i is finished (the others may go on), each request's deltas and
    Generation as `stream` would give them. A request whose `cancelled(i)` turns true stops
    at the next token and gets nothing more (no Generation); closing the iterator stops all."""

    def stream_batch(self, requests: list[Messages], params: GenParams,
                     cancelled: Cancelled) -> Iterator[StreamEvent]:
        ...


def stream_in_threads(stream: Callable[[Messages, GenParams], Iterator[str | Generation]],
                      requests: list[Messages], params: GenParams,
                      cancelled: Cancelled) -> Iterator[StreamEvent]:
    """`stream_batch` for a backend whose `stream` is thread-safe (an HTTP client): one
    thread per request, their events merged as they come. A cancelled request's stream is
    closed at its next delta; closing this iterator cancels every request."""
    events: queue.Queue[StreamEvent | None] = queue.Queue()
    closed = threading.Event()

    def run(i: int) -> None:
        it = stream(requests[i], params)
        try:
            for item in it:
                if closed.is_set() or cancelled(i):
                    return
                events.put((i, item))
        except Exception as e:  # a backend should not raise; its request fails alone
            events.put((i, Generation("", 0, 0, 0.0, "error", f"{type(e).__name__}: {e}")))
        finally:
            it.close()  # type: ignore[attr-defined]
            events.put(None)

    threads = [threading.Thread(target=run, args=(i,), name=f"ladder-stream-{i}", daemon=True)
               for i in range(len(requests))]
    for t in threads:
        t.start()
    try:
        running = len(threads)
        while running:
            event = events.get()
            if event is None:
                running -= 1
            else:
                yield event
    finally:
        closed.set()
        for t in threads:
            t.join()


def releasable(text: str, stop: list[str] | None) -> str:
    """The part of a growing answer that can be sent: cut at the first complete stop string,
    and without a tail that is the start of one (or an unfinished UTF-8 character)."""
    for s in stop or []:
        if s and s in text:
            text = text[: text.index(s)]
    hold = 0
    for s in stop or []:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    text = text[: len(text) - hold]
    return text.rstrip("\ufffd")
