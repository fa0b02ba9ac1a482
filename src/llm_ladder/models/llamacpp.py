"""GGUF models on CPU through llama.cpp (`llama-cpp-python`), one request at a time.

llama.cpp is the fastest way to run the embedded GGUF on a laptop CPU; `name = "gemma3-270m"`
runs Gemma 3 270M (models/local.gemma3_gguf) for a second local model. Requests run
sequentially (llama-cpp-python has no cross-request batching); the prompt is built with the
chat template stored in the GGUF, the same one transformers uses; a base model's GGUF without
one (Gemma 3 270M) gets a plain "User: / Assistant:" transcript that stops at the next
"User:" turn, which is how a base model is prompted few-shot. The anti-loop settings run
as a logits processor over the answer's tokens (transformers' rules, `models/constrain.py`);
a label set or JSON schema becomes a GBNF grammar (llama.cpp's own grammar sampler).
`stream` uses llama.cpp's own streaming
(for `ladder serve`). Skipped: LoRA hot-swapping, multi-sequence batching.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError, require
from llm_ladder.models.base import ANTI_LOOP_DEFAULTS, Generation, GenParams, Messages, anti_loop
from llm_ladder.models.constrain import anti_loop_numpy, constraint_of, gbnf_choices
from llm_ladder.models.local import ALIASES, GEMMA_ALIASES, gemma3_gguf, smollm2_gguf


class LlamaCppModel:
    def __init__(self, name: str = "smollm2-135m", path: str | None = None,
                 threads: int | None = None, context_length: int | None = None, **_: Any):
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
        return [self._one(m, params) for m in requests]

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
                "stop": [*(params.stop or []), *(TRANSCRIPT_STOP if self._format is None
                                                 else [])],
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


TRANSCRIPT_STOP = ["\nUser:", "\n\nUser:"]


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
