"""GGUF models on CPU through llama.cpp (`llama-cpp-python`), several sequences per decode.

llama.cpp is the fastest way to run the embedded GGUF on a laptop CPU; `name = "gemma3-270m"`
runs Gemma 3 270M (models/local.gemma3_gguf) for a second local model. Greedy requests
without a constraint are decoded `batch_size` at a time as parallel sequences of one llama.cpp
context (llama-cpp-python's `Llama` decodes one sequence; `Batched` drives llama.cpp's own
batch API), each sequence in its own KV stream (`kv_unified` off: with a shared stream the
attention sums ran in a different order and 22 of 24 FAQ answers changed; separate streams
gave the same tokens as one at a time). Sampled or constrained requests run one at a time
through `create_completion` (its sampler and grammar). The prompt is built with the
chat template stored in the GGUF, the same one transformers uses; a base model's GGUF without
one (Gemma 3 270M) gets a plain "User: / Assistant:" transcript that stops at the next
"User:" turn, which is how a base model is prompted few-shot. The anti-loop settings run
as a logits processor over the answer's tokens (transformers' rules, `models/constrain.py`);
a label set or JSON schema becomes a GBNF grammar (llama.cpp's own grammar sampler).
`stream` uses llama.cpp's own streaming
(for `ladder serve`), one request at a time. Skipped: LoRA hot-swapping, batched streaming,
continuous batching (a batch runs until its last sequence ends), batched sampling/grammars.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llm_ladder.errors import LadderError, require
from llm_ladder.models.base import ANTI_LOOP_DEFAULTS, Generation, GenParams, Messages, anti_loop
from llm_ladder.models.constrain import anti_loop_numpy, constraint_of, gbnf_choices
from llm_ladder.models.local import (
    ALIASES,
    GEMMA_ALIASES,
    gemma3_gguf,
    smollm2_gguf,
    transcript_stops,
)


class LlamaCppModel:
    def __init__(self, name: str = "smollm2-135m", path: str | None = None,
                 threads: int | None = None, context_length: int | None = None,
                 batch_size: int | None = None, **_: Any):
        llama_cpp = require("llama_cpp", "llamacpp")
        if path is None and name.lower() in ALIASES:
            gguf = smollm2_gguf()
        elif path is None and name.lower() in GEMMA_ALIASES:
            gguf = gemma3_gguf()
        elif path:
            gguf = Path(path)
        else:
            raise LadderError(f"llamacpp model {name!r}: set `path` to a GGUF file")
        if not gguf.is_file():
            raise LadderError(f"{gguf}: GGUF file not found")
        self.name = name
        self.path = gguf
        self.threads = threads or os.cpu_count() or 1
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=context_length or 4096,
                                   n_threads=self.threads, n_batch=512, verbose=False,
                                   flash_attn=True,  # +15% decode tok/s here, measured
                                   seed=0)
        self.context_length = self.llm.n_ctx()
        # parallel sequences per decode; more gave no more here (docs/benchmarks.md, llama.cpp)
        self.batch_size = batch_size or 8
        self._batched: Batched | None = None  # made on first use, grown when a batch needs it
        self._llama_cpp = llama_cpp
        self._grammars: dict[str, Any] = {}
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        meta = self.llm.metadata
        vocab = self.llm._model  # token text for the template's bos/eos
        self._format = None  # a base model: the plain transcript (`transcript`)
        if "tokenizer.chat_template" in meta:
            self._format = Jinja2ChatFormatter(
                template=meta["tokenizer.chat_template"],
                eos_token=vocab.token_get_text(self.llm.token_eos()),
                bos_token=vocab.token_get_text(self.llm.token_bos()),
            )

    def describe(self) -> dict[str, Any]:
        return {"backend": "llamacpp", "name": self.name, "gguf": str(self.path),
                "threads": self.threads, "n_ctx": self.context_length,
                "batch_size": self.batch_size,
                "anti_loop_defaults": dict(ANTI_LOOP_DEFAULTS)}

    def _grammar(self, params: GenParams) -> Any:
        """The call's constraint as a llama.cpp grammar (cached), or None."""
        kind = constraint_of(params)
        if kind is None:
            return None
        key = json.dumps(kind, sort_keys=True)
        if key not in self._grammars:
            g = self._llama_cpp.LlamaGrammar
            try:
                self._grammars[key] = (
                    g.from_string(gbnf_choices(kind[1]), verbose=False) if kind[0] == "choices"
                    else g.from_json_schema(json.dumps(kind[1]), verbose=False))
            except (ValueError, RuntimeError) as e:
                raise LadderError(f"llama.cpp cannot compile the constraint: {e}") from None
        return self._grammars[key]

    def prompt(self, messages: Messages) -> str:
        if self._format is None:
            return transcript(messages)
        return self._format(messages=messages).prompt

    def tokens(self, messages: Messages) -> list[int]:
        # a chat template writes its own BOS; the plain transcript needs the model's
        return self.llm.tokenize(self.prompt(messages).encode(), add_bos=self._format is None,
                                 special=self._format is not None)

    def count_tokens(self, messages: Messages) -> int:
        return len(self.tokens(messages))

    def generate(self, requests: list[Messages], params: GenParams) -> list[Generation]:
        if (self.batch_size < 2 or len(requests) < 2 or params.temperature > 0
                or constraint_of(params) is not None):
            return [self._one(m, params) for m in requests]
        out: list[Generation | None] = [None] * len(requests)
        toks = [self.tokens(m) for m in requests]
        fits = []
        for i, t in enumerate(toks):
            if len(t) + params.max_tokens > self.context_length:
                out[i] = self._one(requests[i], params)  # the same error Generation
            else:
                fits.append(i)
        fits.sort(key=lambda i: len(toks[i]))  # similar lengths together
        for start in range(0, len(fits), self.batch_size):
            part = fits[start:start + self.batch_size]
            for i, gen in zip(part, self._decode_batch([toks[i] for i in part], params),
                              strict=True):
                out[i] = gen
        return [g for g in out if g is not None]

    def _decode_batch(self, toks: list[list[int]], params: GenParams) -> list[Generation]:
        """Greedy decoding of several prompts as parallel sequences (`Batched`), with the
        same anti-loop processor, stop strings, end-of-turn and text as `_one`."""
        per_seq = max(len(t) for t in toks) + params.max_tokens
        if (self._batched is None or self._batched.n_seq < len(toks)
                or self._batched.per_seq < per_seq):
            if self._batched is not None:
                self._batched.close()
            self._batched = Batched(self._llama_cpp, self.llm.model, self.threads,
                                    max(self.batch_size, len(toks)), _round_up(per_seq, 256))
        penalty, ngram = anti_loop(params)
        procs = [anti_loop_numpy(penalty, ngram, start=len(t)) if penalty != 1.0 or ngram > 0
                 else None for t in toks]
        stop = transcript_stops(params.stop, self._format is None)
        t0 = time.perf_counter()
        rows = self._batched.greedy(toks, params.max_tokens, procs,
                                    lambda row: self._cut(row, stop)[1])
        latency = time.perf_counter() - t0
        gens = []
        for t, (row, hit_eog) in zip(toks, rows, strict=True):
            text, stopped = self._cut(row, stop)
            reason = "stop" if hit_eog or stopped else "length"
            gens.append(Generation(text.strip() if self._format is None else text, len(t),
                                   len(row), latency, reason))
        return gens

    def _cut(self, row: list[int], stop: list[str]) -> tuple[str, bool]:
        """The text of generated tokens, cut before the first stop string, and whether one
        was found (as create_completion cuts it; invalid UTF-8 bytes dropped like it does)."""
        text = self.llm.detokenize(row).decode("utf-8", errors="ignore")
        hits = [text.index(s) for s in stop if s and s in text]
        return (text[: min(hits)], True) if hits else (text, False)

    def _one(self, messages: Messages, params: GenParams) -> Generation:
        toks = self.tokens(messages)  # templated and tokenized once
        n_in = len(toks)
        if n_in + params.max_tokens > self.context_length:
            return Generation("", n_in, 0, 0.0, "error",
                              f"prompt of {n_in} tokens + max_tokens {params.max_tokens} "
                              f"exceeds context {self.context_length}")
        t0 = time.perf_counter()
        self.llm.reset()
        out = self.llm.create_completion(toks, **self._settings(params, n_in))
        latency = time.perf_counter() - t0
        choice = out["choices"][0]
        usage = out["usage"]
        text = choice["text"].strip() if self._format is None else choice["text"]
        return Generation(text, usage["prompt_tokens"], usage["completion_tokens"],
                          latency, choice.get("finish_reason") or "stop")

    def _settings(self, params: GenParams, n_in: int, count: list[int] | None = None
                  ) -> dict[str, Any]:
        """create_completion's settings: greedy or sampled, stop strings, the anti-loop
        processor over the answer and the constraint's grammar. With `count`, a processor
        also counts the tokens sampled (a stream reports no usage)."""
        penalty, ngram = anti_loop(params)
        grammar = self._grammar(params)
        procs: list[Any] = []
        if penalty != 1.0 or ngram > 0:  # soft under a grammar: the constraint wins
            procs.append(anti_loop_numpy(penalty, ngram, start=n_in, soft=grammar is not None))
        if count is not None:
            def counted(_ids: Any, scores: Any) -> Any:
                count[0] += 1
                return scores
            procs.append(counted)
        return {"max_tokens": params.max_tokens, "temperature": params.temperature,
                "top_k": 1 if params.temperature == 0 else 40,
                "stop": transcript_stops(params.stop, self._format is None),
                "seed": 0, "repeat_penalty": 1.0,  # ours, over the answer only
                "logits_processor": self._llama_cpp.LogitsProcessorList(procs) if procs
                else None, "grammar": grammar}

    def stream(self, messages: Messages, params: GenParams) -> Iterator[str | Generation]:
        """One request through llama.cpp's own streaming (`stream=True`), the same settings
        as `generate`; closing the iterator stops generation at the next token. The token
        count is the tokens sampled, less the end-of-turn when it stopped there."""
        toks = self.tokens(messages)
        n_in = len(toks)
        if n_in + params.max_tokens > self.context_length:
            yield self._one(messages, params)  # the same error Generation
            return
        count = [0]
        t0 = time.perf_counter()
        self.llm.reset()
        chunks = self.llm.create_completion(toks, stream=True,
                                            **self._settings(params, n_in, count))
        text, sent, reason = "", "", "stop"
        base = self._format is None  # stripped, as `generate` does: a trailing space waits
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                text += choice["text"]
                reason = choice.get("finish_reason") or reason
                safe = text.strip() if base else text
                if len(safe) > len(sent) and safe.startswith(sent):
                    yield safe[len(sent):]
                    sent = safe
        finally:
            chunks.close()
        final = text.strip() if base else text
        if len(final) > len(sent) and final.startswith(sent):
            yield final[len(sent):]
        yield Generation(final, n_in, count[0] - (reason == "stop" and count[0] > 0),
                         time.perf_counter() - t0, reason)


def transcript(messages: Messages) -> str:
    """Messages as a plain transcript for a base model: the system text, a blank line, then
    one "User:" / "Assistant:" line per turn, ending with an open "Assistant:" turn."""
    lines: list[str] = []
    for m in messages:
        text = " ".join(str(m.get("content") or "").split())
        if m["role"] == "system":
            lines += [text, ""]
        else:
            lines.append(f"{'Assistant' if m['role'] == 'assistant' else 'User'}: {text}")
    return "\n".join(lines) + "\nAssistant:"


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


class Batched:
    """A llama.cpp context for `n_seq` parallel sequences of up to `per_seq` tokens each, in
    separate KV streams, decoded greedily with llama.cpp's batch API (one `llama_decode` per
    step for every running sequence). The KV memory is n_seq x per_seq tokens."""

    N_BATCH = 512

    def __init__(self, llama_cpp: Any, model: Any, threads: int, n_seq: int, per_seq: int):
        self.L, self.n_seq, self.per_seq = llama_cpp, n_seq, per_seq
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_seq_max = n_seq * per_seq, n_seq
        cp.n_batch = cp.n_ubatch = self.N_BATCH
        cp.n_threads = cp.n_threads_batch = threads
        cp.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED  # as the Llama above
        cp.kv_unified = False  # a KV stream per sequence: the same sums as one at a time
        self.ctx = llama_cpp.llama_init_from_model(model, cp)
        if not self.ctx:
            raise LadderError(f"llama.cpp could not make a context for {n_seq} sequences of "
                              f"{per_seq} tokens; lower batch_size")
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(self.N_BATCH, 0, n_seq)

    def close(self) -> None:
        if getattr(self, "ctx", None):  # also after a failed __init__
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
            self.ctx = None

    def __del__(self) -> None:
        self.close()

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = seq
        b.n_tokens = i + 1
        return i

    def _decode(self) -> None:
        rc = self.L.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise LadderError(f"llama_decode failed ({rc}) on a batch of "
                              f"{self.batch.n_tokens} tokens")

    def _logits(self, i: int) -> Any:
        ptr = self.L.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def greedy(self, prompts: list[list[int]], max_tokens: int, procs: list[Any],
               stopped: Any) -> list[tuple[list[int], bool]]:
        """Each prompt's generated tokens (the end-of-turn token left out) and whether it
        ended at end-of-turn. `procs[s]` adjusts sequence s's scores from its ids (prompt
        and answer); `stopped(row)` says a stop string has appeared."""
        import numpy as np

        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)
        scores: dict[int, Any] = {}
        # the prompts, packed into decodes of at most N_BATCH tokens; each sequence's last
        # logits are copied out before the next decode overwrites them
        self.batch.n_tokens = 0
        wanted: dict[int, int] = {}
        for s, toks in enumerate(prompts):
            for j, tok in enumerate(toks):
                if self.batch.n_tokens == self.N_BATCH:
                    self._decode()
                    scores.update({q: self._logits(i) for q, i in wanted.items()})
                    wanted, self.batch.n_tokens = {}, 0
                i = self._add(tok, j, s, j == len(toks) - 1)
                if j == len(toks) - 1:
                    wanted[s] = i
        self._decode()
        scores.update({q: self._logits(i) for q, i in wanted.items()})
        ids = [list(t) for t in prompts]
        rows: list[list[int]] = [[] for _ in prompts]
        eog = [False] * len(prompts)
        running = list(range(len(prompts)))
        while running:
            self.batch.n_tokens = 0
            at: dict[int, int] = {}
            for s in running:
                sc = scores[s]
                if procs[s] is not None:
                    sc = procs[s](np.array(ids[s], dtype=np.intc), sc)
                tok = int(np.argmax(sc))
                if self.L.llama_vocab_is_eog(self.vocab, tok):
                    eog[s] = True
                    continue
                rows[s].append(tok)
                ids[s].append(tok)
                if len(rows[s]) >= max_tokens or stopped(rows[s]):
                    continue
                at[s] = self._add(tok, len(ids[s]) - 1, s, True)
            running = list(at)
            if running:
                self._decode()
                scores = {s: self._logits(i) for s, i in at.items()}
        return list(zip(rows, eog, strict=True))
