"""The tool-calling loop: generate, read the calls, execute them, feed the results back, until
a plain answer or `max_steps` turns.

Two protocols: backends with native tool calls (the `openai` backend, `supports_tools`) get
the tools in the request and return `tool_calls`; the others (the embedded model) read the
tools in the prompt and reply with `{"name": ..., "arguments": {...}}` (tools/calls.py).
Every turn (raw text, calls, results, errors) is kept as the prediction's trace; the output
scored is `{"calls": [...], "answer": "..."}`. The first turn of a chunk is one batched
generate call. Skipped: streaming and parallel execution of one turn's calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from llm_ladder.data import Messages
from llm_ladder.models.base import Generation, GenParams
from llm_ladder.tools.calls import parse_calls
from llm_ladder.tools.executor import Executor
from llm_ladder.tools.schemas import Call, Tool


@dataclass
class Request:
    messages: Messages
    tools: list[Tool]  # sent natively; in the JSON protocol they are in the messages already


@dataclass
class LoopResult:
    messages: Messages  # the whole conversation: the request, calls, results
    generation: Generation  # tokens and latency summed over the turns, the last text
    output: str  # {"calls": [...], "answer": "..."}, what the metric scores
    trace: list[dict[str, Any]] = field(default_factory=list)


def _merge(gens: list[Generation]) -> Generation:
    last = gens[-1]
    return Generation(last.text, sum(g.tokens_in for g in gens),
                      sum(g.tokens_out for g in gens), sum(g.latency_s for g in gens),
                      last.finish_reason, next((g.error for g in gens if g.error), None))


def native_message(text: str, calls: list[Call]) -> dict[str, Any]:
    return {"role": "assistant", "content": text or None, "tool_calls": [
        {"id": c["id"], "type": "function",
         "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])
                      if not isinstance(c["arguments"], str) else c["arguments"]}}
        for c in calls]}


def run_loop(model: Any, requests: list[Request], params: GenParams, native: bool,
             executor: Executor | None, max_steps: int) -> list[LoopResult]:
    """Turns until each request has a plain answer, made calls nobody executes, or used up
    `max_steps`. Each turn generates for every unfinished request at once (JSON protocol:
    one batch; native: one batch per distinct tool list)."""
    convs = [list(r.messages) for r in requests]
    gens: list[list[Generation]] = [[] for _ in requests]
    traces: list[list[dict[str, Any]]] = [[] for _ in requests]
    calls: list[list[Call]] = [[] for _ in requests]
    answers = [""] * len(requests)
    active = list(range(len(requests)))
    for step in range(max_steps):
        if not active:
            break
        for i, gen in zip(active, _generate(model, [convs[i] for i in active],
                                            [requests[i].tools for i in active], params,
                                            native), strict=True):
            gens[i].append(gen)
        still = []
        for i in active:
            gen = gens[i][-1]
            if gen.error:
                traces[i].append({"step": step, "error": gen.error})
                continue
            made = (_native_calls(gen) if native else parse_calls(gen.text))
            turn: dict[str, Any] = {"step": step, "text": gen.text,
                                    "calls": [{"name": c["name"], "arguments": c["arguments"]}
                                              for c in made]}
            traces[i].append(turn)
            calls[i] += turn["calls"]
            if not made:
                answers[i] = gen.text.strip()
                continue
            if executor is None:  # calls are the answer: nothing executes them
                continue
            results = [executor.run(c) for c in made]
            turn["results"] = [{"name": c["name"], "result": r, **({"error": e} if e else {})}
                               for c, (r, e) in zip(made, results, strict=True)]
            if native:
                convs[i].append(native_message(gen.text, made))
                convs[i] += [{"role": "tool", "tool_call_id": c["id"], "content": r}
                             for c, (r, _) in zip(made, results, strict=True)]
            else:
                convs[i].append({"role": "assistant", "content": gen.text})
                convs[i].append({"role": "user", "content": "\n".join(
                    f"Result of {c['name']}: {r}" for c, (r, _) in zip(made, results,
                                                                       strict=True))
                    + "\nAnswer the request with these results, or call another tool."})
            if step == max_steps - 1:
                turn["stopped"] = f"max_steps ({max_steps}) reached without a final answer"
            else:
                still.append(i)
        active = still
    return [LoopResult(convs[i], _merge(gens[i]),
                       json.dumps({"calls": calls[i], "answer": answers[i]}, ensure_ascii=False),
                       traces[i]) for i in range(len(requests))]


def _native_calls(gen: Generation) -> list[Call]:
    return [{"id": c.get("id") or f"call_{k}", "name": c["name"], "arguments": c["arguments"]}
            for k, c in enumerate(gen.tool_calls or [])]


def _generate(model: Any, convs: list[Messages], tools: list[list[Tool]], params: GenParams,
              native: bool) -> list[Generation]:
    if not native:
        return model.generate(convs, params)
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(tools):
        groups.setdefault(json.dumps(t, sort_keys=True), []).append(i)
    out: list[Generation | None] = [None] * len(convs)
    for idx in groups.values():
        p = replace(params, tools=tools[idx[0]] or None)  # the anti-loop settings kept
        for i, g in zip(idx, model.generate([convs[i] for i in idx], p), strict=True):
            out[i] = g
    return [g for g in out if g is not None]
