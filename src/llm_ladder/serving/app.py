"""`ladder serve`: the chosen pipeline behind an OpenAI-compatible HTTP API.

`POST /v1/chat/completions` (plain or SSE streaming), `GET /v1/models`, `GET /health`. The
client's `messages` are the pipeline's input; the pipeline builds the exact messages for the
model (system prompt, shots, retrieved chunks), and the parsed answer is what comes back,
with OpenAI's `usage` and, for RAG pipelines, a top-level `citations` list.

One worker thread owns the model (the local backend is not thread-safe). It takes whatever
requests are waiting (after a 5 ms wait for more), up to `max_concurrency`, and generates
them as one batch (dynamic batching); past `max_concurrency + max_queue` admitted requests
the server answers 429 at once. Every answer passes the guards (serving/guard.py) and is
logged to the run store, and the log row is committed before the response is released, so a
crash after the client got its answer loses nothing; redaction and that write run on a second
thread, so they never hold up the next batch's generation. `stream: true` streams token by
token when the backend can (models/base.StreamsTokens) and no guard needs the whole answer
(`whole_answer_reasons`): streamed requests waiting together are generated as one batch where
the backend can (StreamsBatches: the local model, the OpenAI client), alone otherwise (the
llama.cpp binding); the worker hands each delta to its handler as it is decoded (held back
only where an image could start, when images are stripped), finishes and logs each request
with its time to first token as soon as its own answer ends, and a client that goes away
stops its request. Otherwise streaming sends the finished, checked answer as SSE chunks.
Sampling is pinned to what the rung was evaluated with; a client's `temperature`, `top_p` or
`stop` are ignored and `max_tokens` can only lower the cap. Deliberately skipped: joining a
batch already running (continuous batching), mixing streamed and plain requests in one
batch, n > 1, tools, logprobs, multiple models per server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_ladder.errors import require
from llm_ladder.models.base import (
    ChatModel,
    Generation,
    GenParams,
    Messages,
    StreamsBatches,
    StreamsTokens,
)
from llm_ladder.rungs.base import Pipeline
from llm_ladder.serving.guard import (
    Guard,
    Redactor,
    check_schema,
    error_body,
    strip_images,
    valid_citations,
)
from llm_ladder.session import Prepared
from llm_ladder.task import ServeConfig

REFUSAL = "I cannot answer that from the documents I have."
BATCH_WAIT_S = 0.005  # how long the worker waits for more requests to join a batch
SCHEMA_RETRY = ("Your reply was not valid: {problem}. Reply again with only the JSON value, "
                "matching the schema, and nothing else.")


@dataclass
class Served:
    """What the server runs, and the names its logs carry."""

    pipeline: Pipeline
    model: ChatModel
    task: str
    rung: str
    model_key: str = "default"
    run_id: str | None = None
    name: str = ""  # the model id clients send; default TASK/RUNG
    schema: dict[str, Any] | None = None  # serve.output_schema, loaded
    warnings: list[str] = field(default_factory=list)
    prep: Prepared | None = None  # the data the pipeline was built from (labels, schema)

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.task}/{self.rung}"


# ---- the request ---------------------------------------------------------------------
class Part(BaseModel):
    type: Literal["text"]
    text: str


class InMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part]

    def plain(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else \
            "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(BaseModel):
    """The fields we read; others (user, seed, top_p, metadata, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[InMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None


REFUSED_FIELDS = {
    "logprobs": "logprobs are off on this server (they leak the model's distribution)",
    "top_logprobs": "logprobs are off on this server (they leak the model's distribution)",
    "logit_bias": "logit_bias is off on this server",
    "tools": "tool calls are not served; this server answers with the evaluated pipeline",
    "functions": "tool calls are not served; this server answers with the evaluated pipeline",
}


class BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def parse_request(raw: bytes, served_name: str) -> ChatRequest:
    """The request, or BadRequest with a message naming what is wrong."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "the request body must be a JSON object")
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors()[:5]:
            loc = ".".join(str(x) for x in err["loc"]) or "(body)"
            problems.append(f"{loc}: {err['msg']}")
        raise BadRequest(400, "invalid request: " + "; ".join(problems)) from None
    for name, why in REFUSED_FIELDS.items():
        value = getattr(req, name)
        if value not in (None, False, [], {}):
            raise BadRequest(400, f"{name}: {why}", "unsupported_parameter")
    if req.model and req.model != served_name:
        raise BadRequest(404, f"model {req.model!r} is not served here; this server serves "
                              f"{served_name!r}", "model_not_found")
    if req.messages[-1].role != "user":
        raise BadRequest(400, f"messages.{len(req.messages) - 1}.role: the last message must "
                              "be the user's")
    return req


# ---- the worker ----------------------------------------------------------------------
_NOT_REDACTED = frozenset({"id", "created", "task", "rung", "model", "run_id", "status",
                           "http_status", "tokens_in", "tokens_out", "latency_s"})

@dataclass
class Job:
    id: str
    request: Messages
    max_tokens: int
    t0: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    timed_out: bool = False
    # a token-streamed request: the worker sends ("delta", text) as it is decoded, then
    # ("end", Result | Exception) once logged; `cancel` is set when the client goes away
    sink: Callable[[tuple[str, Any]], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Streaming:
    """One streamed request while its batch runs: what the model wrote (`raw`), what left
    (`sent`), its time to first token, and its Generation once the model finished it."""

    job: Job
    msgs: Messages
    context: list[dict[str, Any]] | None
    raw: str = ""
    sent: str = ""
    deltas: int = 0
    ttft: float | None = None
    gen: Generation | None = None
    ended: bool = False


@dataclass
class Result:
    status: str  # ok | refused | invalid_output | error | bad_request | timeout
    http_status: int
    answer: str | None = None
    error: str | None = None  # safe to show the client
    citations: list[dict[str, Any]] | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str = "stop"
    created: int = field(default_factory=lambda: int(time.time()))


def whole_answer_reasons(served: Served, cfg: ServeConfig) -> list[str]:
    """Why `stream: true` must wait for the whole answer here (empty: it streams tokens).

    Whole-answer guards: an output schema (validated, retried), required citations (an
    answer citing nothing valid is refused), a rung that parses its answer (chain of thought
    keeps the final answer only) or constrains it (label set, JSON schema), tool calls. Not
    whole-answer: image stripping (text is held back from the first `![` or `<` only),
    citation listing without refusal (sent with the last chunk), redaction (logs only)."""
    p = served.pipeline
    why = []
    if not isinstance(served.model, StreamsTokens):
        why.append(f"the model {served.model_key!r} ({type(served.model).__name__}) cannot "
                   "stream tokens")
    if served.schema is not None:
        why.append("serve.output_schema: the answer is validated (and retried) whole")
    if cfg.require_citations:
        why.append("serve.require_citations: an answer citing no retrieved chunk is refused")
    if p.parse is not str.strip:
        why.append(f"the {p.rung} rung parses the whole answer")
    if p.params.choices is not None or p.params.json_schema is not None:
        why.append(f"the {p.rung} rung constrains the answer (label set or JSON schema)")
    if p.params.tools or p.loop is not None:
        why.append(f"the {p.rung} rung calls tools")
    return why


class Engine:
    """One thread owns the model: batch what is waiting, generate, guard, log, release."""

    def __init__(self, served: Served, cfg: ServeConfig, store: Any = None):
        self.served, self.cfg = served, cfg
        self.store = store if cfg.log_requests else None
        self.redact = Redactor(cfg.redact)
        self.queue: deque[Job] = deque()
        self.running = 0
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="ladder-serve-worker",
                                       daemon=True)
        # redaction and the log write run here, off the model worker: a slow pattern or a
        # large body delays its own response, never the next batch's generation
        self.finisher = ThreadPoolExecutor(1, thread_name_prefix="ladder-serve-log")
        self.whole_answer = whole_answer_reasons(served, cfg)  # empty: tokens stream

    @property
    def admitted(self) -> int:
        return len(self.queue) + self.running

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every admitted job, then end the worker."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout)
        self.finisher.shutdown(wait=True)

    def submit(self, request: Messages, max_tokens: int,
               sink: Callable[[tuple[str, Any]], None] | None = None) -> Job | None:
        """Admit a job, or None when the server is full (the caller answers 429). With
        `sink`, the job streams its tokens there (only when `whole_answer` is empty)."""
        with self.cond:
            if self.stopping or self.admitted >= self.cfg.max_concurrency + self.cfg.max_queue:
                return None
            job = Job("chatcmpl-" + uuid.uuid4().hex[:24], request, max_tokens, sink=sink)
            self.queue.append(job)
            self.cond.notify()
            return job

    def _take(self) -> list[Job]:
        with self.cond:
            while not self.queue and not self.stopping:
                self.cond.wait()
            if not self.queue:
                return []
            first = self.queue.popleft()
            batch, other = [first], []
            if first.sink is not None and not isinstance(self.served.model, StreamsBatches):
                self.running = 1  # a backend that streams one request at a time
                return batch
            # wait a moment for more: clients answered together come back together; streamed
            # requests are batched with streamed ones, plain with plain
            deadline = time.monotonic() + BATCH_WAIT_S
            while len(batch) < self.cfg.max_concurrency:
                if not self.queue:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.stopping:
                        break
                    self.cond.wait(left)
                    continue
                job = self.queue.popleft()
                (batch if job.max_tokens == first.max_tokens
                 and (job.sink is None) == (first.sink is None) else other).append(job)
            self.queue.extendleft(reversed(other))
            self.running = len(batch)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            try:
                if batch[0].sink is not None:
                    self._stream(batch)
                else:
                    self._run(batch)
            except Exception as e:  # never leave a client waiting on a dead worker
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                    elif job.sink is not None:
                        job.sink(("end", e))
            finally:
                with self.cond:
                    self.running = 0

    def _run(self, batch: list[Job]) -> None:
        p, model = self.served.pipeline, self.served.model
        rows: list[dict[str, Any]] = []
        results: list[Result] = []
        todo: list[tuple[int, Job, Messages, list[dict[str, Any]] | None]] = []
        for job in batch:
            msgs, context, failed = self._prepare(job)
            if failed is not None:
                results.append(failed[0])
                rows.append(failed[1])
                continue
            results.append(Result("ok", 200))
            todo.append((len(results) - 1, job, msgs, context))
        if todo:
            # the rung's own settings (temperature, stop, tools), with this batch's cap
            params = dataclasses.replace(p.params, max_tokens=todo[0][1].max_tokens)
            try:
                gens = model.generate([m for _, _, m, _ in todo], params)
            except Exception as e:  # backends should not raise; if one does, log and answer
                gens = [Generation("", 0, 0, 0.0, "error", f"{type(e).__name__}: {e}")
                        for _ in todo]
            for (i, job, msgs, context), gen in zip(todo, gens, strict=True):
                res, raw, detail = self._guard(job, msgs, context, gen, params)
                detail["batch"] = len(todo)  # requests generated together (dynamic batching)
                results[i] = res
                rows.append(self._row(job, res, msgs, raw, context, detail))
        by_id = {r["id"]: r for r in rows}
        for job in batch:
            with job.lock:  # the handler may have given up on it (timeout) already
                job.done = True
                if job.timed_out:
                    by_id[job.id].update(status="timeout", http_status=504)
        self.finisher.submit(self._finish, batch, rows, results)

    def _prepare(self, job: Job) -> tuple[Messages, list[dict[str, Any]] | None,
                                          tuple[Result, dict[str, Any]] | None]:
        """The job's model messages and retrieved chunks, or (its failure, its log row)."""
        p, model = self.served.pipeline, self.served.model
        with job.lock:
            expired = job.timed_out  # the client was answered 504 while this waited
        if expired:
            res = Result("timeout", 504, error="timed out in the queue")
            return [], None, (res, self._row(job, res, None, None, None, {}))
        try:
            msgs, context = p.prepare(job.request)
            n_in = model.count_tokens(msgs)
        except Exception as e:  # a failed retrieval fails this request only
            res = Result("error", 500, error="the pipeline failed")
            return [], None, (res, self._row(job, res, None, None, None,
                                             {"error": f"prepare: {e}"}))
        if n_in + job.max_tokens > model.context_length:
            res = Result("bad_request", 400, error=(
                f"the prompt is {n_in} tokens; with max_tokens {job.max_tokens} it exceeds "
                f"the model's context of {model.context_length}"))
            return msgs, context, (res, self._row(job, res, msgs, None, context, {}))
        return msgs, context, None

    def _stream(self, batch: list[Job]) -> None:
        """Streamed requests, generated together where the backend can (StreamsBatches):
        each delta goes to its client as the model decodes it; each request is finished as
        soon as its own answer ends (citations listed, images stripped from what was held
        back), logged with `ttft_s`, and its end sent. A client that went away
        (`job.cancel`) stops its request and is logged as `client_closed`."""
        p, model = self.served.pipeline, self.served.model
        live: list[_Streaming] = []
        for job in batch:
            msgs, context, failed = self._prepare(job)
            if failed is not None:  # answered with a plain error, as without streaming
                self.finisher.submit(self._finish, [job], [failed[1]], [failed[0]])
                continue
            with job.lock:  # the response starts now: the queue timeout no longer applies
                job.done = True
            job.future.set_result(Result("streaming", 200))
            live.append(_Streaming(job, msgs, context))
        if not live:
            return
        params = dataclasses.replace(p.params, max_tokens=batch[0].max_tokens)
        if isinstance(model, StreamsBatches):
            events = model.stream_batch([s.msgs for s in live], params,
                                        lambda i: live[i].job.cancel.is_set())
        else:  # one request at a time (`_take` gave this one alone)
            events = ((0, item) for item in model.stream(  # type: ignore[attr-defined]
                live[0].msgs, params))
        try:
            for i, item in events:
                s = live[i]
                if isinstance(item, Generation):
                    s.gen = item
                    self._end_stream(s, params, len(live))
                    continue
                s.raw, s.deltas = s.raw + item, s.deltas + 1
                safe = self._releasable(s.raw)
                if len(safe) > len(s.sent) and safe.startswith(s.sent):
                    s.ttft = s.ttft if s.ttft is not None else time.perf_counter() - s.job.t0
                    s.job.sink(("delta", safe[len(s.sent):]))  # type: ignore[misc]
                    s.sent = safe
                if all(x.job.cancel.is_set() or x.ended for x in live):
                    break
        except Exception as e:  # backends should not raise; if one does, log and end
            for s in live:
                if not s.ended and s.gen is None:
                    s.gen = Generation(s.raw, 0, 0, 0.0, "error", f"{type(e).__name__}: {e}")
        finally:
            events.close()  # every client gone: generation stops at the next token
        for s in live:
            if not s.ended:
                self._end_stream(s, params, len(live))

    def _end_stream(self, s: _Streaming, params: GenParams, together: int) -> None:
        """Finish one streamed request: its last delta, its log row, then its end event."""
        job, model = s.job, self.served.model
        s.ended = True
        detail: dict[str, Any] = {"max_tokens": job.max_tokens, "stream": "tokens",
                                  "ttft_s": s.ttft, "batch": together}
        if job.cancel.is_set() and s.gen is None:
            res = Result("client_closed", 499, answer=s.sent,
                         tokens_in=model.count_tokens(s.msgs), tokens_out=s.deltas,
                         finish_reason="client_closed")
            detail["tokens_out"] = "deltas received before the client closed the stream"
            self.finisher.submit(self._finish, [job], [self._row(job, res, s.msgs, s.raw,
                                                                 s.context, detail)], [res])
            return
        gen = s.gen or Generation(s.raw, 0, 0, 0.0, "error", "the stream ended without a result")
        detail["finish_reason"] = gen.finish_reason
        res = Result("ok", 200, tokens_in=gen.tokens_in, tokens_out=gen.tokens_out,
                     finish_reason=gen.finish_reason)
        if gen.error:
            res.status, res.http_status, res.error = "error", 502, "the model failed to answer"
            detail["error"] = gen.error
        else:
            sent, context = s.sent, s.context
            answer = self.served.pipeline.parse(s.raw)
            rest = answer[len(sent):]
            if not answer.startswith(sent):
                detail["stream_mismatch"] = True  # never seen: the client got `sent` + rest
            elif self.cfg.strip_images:
                clean, removed = strip_images(rest)
                if removed:
                    lead = rest[: len(rest) - len(rest.lstrip())]
                    rest = lead + clean
                    detail["images_removed"] = removed
            answer = sent + rest
            if rest:
                s.ttft = s.ttft if s.ttft is not None else time.perf_counter() - job.t0
                detail["ttft_s"] = s.ttft
                job.sink(("delta", rest))  # type: ignore[misc]
            if context is not None:
                valid, invalid = valid_citations(answer, context)
                res.citations = [{"n": c["n"], "id": c.get("id"), "doc_id": c.get("doc_id"),
                                  "source": c.get("source"), "score": c.get("score"),
                                  "cited": c["n"] in valid} for c in context]
                detail["citations"] = {"valid": valid, "invalid": invalid}
            res.answer = answer
        self.finisher.submit(self._finish, [job], [self._row(job, res, s.msgs, s.raw, s.context,
                                                             detail)], [res])

    def _releasable(self, raw: str) -> str:
        """What of a growing answer may leave now: stripped as `parse` (str.strip) will, and,
        when images are stripped, nothing from the first `![` or `<` (or a trailing `!`)."""
        text = raw.lstrip().rstrip()
        if self.cfg.strip_images:
            cuts = [i for i in (text.find("!["), text.find("<")) if i >= 0]
            if text.endswith("!"):
                cuts.append(len(text) - 1)
            if cuts:
                text = text[: min(cuts)].rstrip()
        return text

    def _finish(self, batch: list[Job], rows: list[dict[str, Any]],
                results: list[Result]) -> None:
        """Redact and log a batch, then release its responses."""
        try:
            rows = [{k: v if k in _NOT_REDACTED else self.redact(v) for k, v in row.items()}
                    for row in rows]
            if self.store is not None:
                self.store.add_request_logs(rows)  # committed before any response is released
        except Exception as e:
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(e)
                elif job.sink is not None:
                    job.sink(("end", e))
            return
        for job, res in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(res)
            elif job.sink is not None:  # a stream already under way: its end
                job.sink(("end", res))

    def _guard(self, job: Job, msgs: Messages, context: list[dict[str, Any]] | None,
               gen: Any, params: GenParams) -> tuple[Result, str, dict[str, Any]]:
        """Parse the answer and apply the output guards; one retry for a schema failure."""
        p, cfg = self.served.pipeline, self.cfg
        detail: dict[str, Any] = {"max_tokens": job.max_tokens, "finish_reason":
                                  gen.finish_reason}
        res = Result("ok", 200, tokens_in=gen.tokens_in, tokens_out=gen.tokens_out,
                     finish_reason=gen.finish_reason)
        if gen.error:
            res.status, res.http_status, res.error = "error", 502, "the model failed to answer"
            detail["error"] = gen.error
            return res, gen.text, detail
        raw = gen.text
        answer = self._clean(p.parse(raw), detail)
        if self.served.schema is not None:
            answer, problem = check_schema(answer, self.served.schema)
            if problem:
                detail["schema_retry"] = problem
                retry = msgs + [{"role": "assistant", "content": raw},
                                {"role": "user", "content": SCHEMA_RETRY.format(problem=problem)}]
                (gen2,) = self.served.model.generate([retry], params)
                res.tokens_in += gen2.tokens_in
                res.tokens_out += gen2.tokens_out
                raw = gen2.text
                answer, problem = check_schema(self._clean(p.parse(raw), detail),
                                               self.served.schema)
                if gen2.error or problem:
                    res.status, res.http_status = "invalid_output", 502
                    res.error = ("the model's answer did not match the output schema after one "
                                 f"retry ({gen2.error and 'generation failed' or problem})")
                    return res, raw, detail
        if context is not None:
            valid, invalid = valid_citations(answer, context)
            res.citations = [{"n": c["n"], "id": c.get("id"), "doc_id": c.get("doc_id"),
                              "source": c.get("source"), "score": c.get("score"),
                              "cited": c["n"] in valid} for c in context]
            detail["citations"] = {"valid": valid, "invalid": invalid}
            if cfg.require_citations and (not valid or invalid):
                res.status, res.finish_reason = "refused", "content_filter"
                detail["refused_answer"] = answer
                res.answer = None
                return res, raw, detail
        res.answer = answer
        return res, raw, detail

    def _clean(self, answer: str, detail: dict[str, Any]) -> str:
        if self.cfg.strip_images:
            answer, removed = strip_images(answer)
            if removed:
                detail["images_removed"] = detail.get("images_removed", 0) + removed
        return answer

    def _row(self, job: Job, res: Result, msgs: Messages | None, raw: str | None,
             context: list[dict[str, Any]] | None, detail: dict[str, Any]) -> dict[str, Any]:
        s = self.served
        cites = res.citations or ([{k: c.get(k) for k in ("n", "id", "doc_id", "source",
                                                          "score")} for c in context]
                                  if context else None)
        return {"id": job.id, "created": time.time(), "task": s.task, "rung": s.rung,
                "model": s.model_key, "run_id": s.run_id, "status": res.status,
                "http_status": res.http_status, "request": job.request,
                "messages": msgs, "response": res.answer, "raw_output": raw,
                "citations": cites, "tokens_in": res.tokens_in,
                "tokens_out": res.tokens_out, "latency_s": time.perf_counter() - job.t0,
                "error": detail.get("error") or res.error, "details": detail}


# ---- the app -------------------------------------------------------------------------
def create_app(served: Served, cfg: ServeConfig, store: Any = None, token: str | None = None,
               host: str = "127.0.0.1"):
    """The ASGI app: FastAPI routes wrapped in the Guard (Host/Origin, auth, Content-Type,
    body limit); `host` is the address the server binds, which Host/Origin must name."""
    fastapi = require("fastapi", "serve")
    from fastapi.responses import JSONResponse, StreamingResponse

    engine = Engine(served, cfg, store)
    started = int(time.time())

    async def lifespan(_app):
        engine.start()
        yield
        # uvicorn has stopped accepting and waited for the open requests; finish the rest
        await asyncio.to_thread(engine.stop)

    app = fastapi.FastAPI(title="llm-ladder", lifespan=lifespan, docs_url=None,
                          redoc_url=None, openapi_url=None)
    app.state.engine = engine

    def error(status: int, message: str, code: str, kind: str = "invalid_request_error",
              headers: dict[str, str] | None = None):
        return JSONResponse(error_body(message, kind, code), status, headers=headers)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.name, "admitted": engine.admitted}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model",
                                            "created": started, "owned_by": "llm-ladder"}]}

    async def chat(request):
        try:
            req = parse_request(await request.body(), served.name)
        except BadRequest as e:
            return error(e.status, e.message, e.code)
        asked = req.max_completion_tokens or req.max_tokens or served.pipeline.params.max_tokens
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        sink = None
        if req.stream and not engine.whole_answer:
            loop = asyncio.get_running_loop()

            def sink(item: tuple[str, Any]) -> None:  # called on the worker threads
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens
                    loop.call_soon_threadsafe(events.put_nowait, item)

        job = engine.submit([m.plain() for m in req.messages], min(asked, cfg.max_output_tokens),
                            sink)
        if job is None:
            return error(429, "the server is busy; retry shortly", "busy", "rate_limit_error",
                         {"Retry-After": "1"})
        wrapped = asyncio.wrap_future(job.future)
        done, _ = await asyncio.wait([wrapped], timeout=cfg.timeout_s)
        if not done:
            with job.lock:
                job.timed_out = not job.done
            if job.timed_out:
                return error(504, f"no answer within {cfg.timeout_s:g} s", "timeout",
                             "timeout_error")
            await asyncio.wait([wrapped])  # it finished as the timeout fired
        if wrapped.exception() is not None:
            return error(500, "the server failed to answer", "server_error", "server_error")
        res: Result = wrapped.result()
        if res.status == "streaming":
            usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(live_sse(job, events, served.name, usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        if res.http_status != 200:
            kind = "invalid_request_error" if res.http_status < 500 else "server_error"
            return error(res.http_status, res.error or "failed", res.status, kind)
        if req.stream:
            usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(sse(job.id, served.name, res, usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return completion(job.id, served.name, res)

    chat.__annotations__["request"] = fastapi.Request  # a local import: resolve it here
    app.post("/v1/chat/completions")(chat)
    return Guard(app, token, cfg.max_body_bytes, host)


def _message(res: Result) -> dict[str, Any]:
    if res.status == "refused":
        return {"role": "assistant", "content": None, "refusal": REFUSAL}
    return {"role": "assistant", "content": res.answer}


def _usage(res: Result) -> dict[str, int]:
    return {"prompt_tokens": res.tokens_in, "completion_tokens": res.tokens_out,
            "total_tokens": res.tokens_in + res.tokens_out}


def completion(job_id: str, name: str, res: Result) -> dict[str, Any]:
    doc = {"id": job_id, "object": "chat.completion", "created": res.created, "model": name,
           "choices": [{"index": 0, "message": _message(res), "logprobs": None,
                        "finish_reason": res.finish_reason}],
           "usage": _usage(res)}
    if res.citations is not None:
        doc["citations"] = res.citations
    return doc


def _chunk(job_id: str, name: str, created: int, delta: dict[str, Any],
           finish: str | None = None, **extra: Any) -> str:
    doc = {"id": job_id, "object": "chat.completion.chunk", "created": created,
           "model": name, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                       "finish_reason": finish}], **extra}
    return f"data: {json.dumps(doc)}\n\n"


def _tail(job_id: str, name: str, res: Result, usage: bool) -> Iterator[str]:
    """The finish chunk (with citations), the usage chunk if asked, [DONE]."""
    extra = {"citations": res.citations} if res.citations is not None else {}
    yield _chunk(job_id, name, res.created, {}, res.finish_reason, **extra)
    if usage:
        doc = {"id": job_id, "object": "chat.completion.chunk", "created": res.created,
               "model": name, "choices": [], "usage": _usage(res)}
        yield f"data: {json.dumps(doc)}\n\n"
    yield "data: [DONE]\n\n"


def sse(job_id: str, name: str, res: Result, usage: bool) -> Iterator[str]:
    """OpenAI's chunk stream of a finished answer: role, content, finish, usage, [DONE]."""
    msg = _message(res)
    yield _chunk(job_id, name, res.created, {"role": "assistant", "content": ""})
    if msg.get("refusal"):
        yield _chunk(job_id, name, res.created, {"refusal": msg["refusal"]})
    elif msg["content"]:
        yield _chunk(job_id, name, res.created, {"content": msg["content"]})
    yield from _tail(job_id, name, res, usage)


async def live_sse(job: Job, events: asyncio.Queue[tuple[str, Any]], name: str,
                   usage: bool) -> AsyncIterator[str]:
    """OpenAI's chunk stream as the worker decodes: role, one chunk per delta, then (once
    the request is logged) finish, usage, [DONE]; a failure after the first byte is an
    `error` event. If the client goes away first, the worker is told to stop."""
    created = int(time.time())
    finished = False
    try:
        yield _chunk(job.id, name, created, {"role": "assistant", "content": ""})
        while True:
            kind, value = await events.get()
            if kind != "delta":
                break
            yield _chunk(job.id, name, created, {"content": value})
        if isinstance(value, Result) and value.http_status == 200:
            value.created = created
            for line in _tail(job.id, name, value, usage):
                yield line
        else:
            code = value.status if isinstance(value, Result) else "server_error"
            message = (value.error if isinstance(value, Result) else None) or \
                "the server failed to answer"
            yield f"data: {json.dumps(error_body(message, 'server_error', code))}\n\n"
            yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            job.cancel.set()


def run_server(app: Any, host: str, port: int, cfg: ServeConfig) -> None:
    """Serve until SIGINT/SIGTERM; open requests finish before the process exits."""
    uvicorn = require("uvicorn", "serve")
    uvicorn.run(app, host=host, port=port, log_level="info",
                timeout_graceful_shutdown=int(cfg.timeout_s) + 5, server_header=False)
