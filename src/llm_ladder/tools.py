"""Tool use: tool schemas, the tool-calling loop, and the `tool-use` / `few-shot-tools` rungs.

Tools are declared in a JSON file in the OpenAI tools format (`[tools] file`), checked here
with errors naming the file, the tool and the field. Each example may offer a subset through
`meta.tools` (a list of tool names); those are listed in its own user turn, so few-shot turns
show their own tools. Otherwise the task's tools are listed once in the system prompt.

Two protocols: backends with native tool calls (the `openai` backend, `supports_tools`) get
the tools in the request and return `tool_calls`; the others (the embedded model) read the
tools in the prompt and reply with `{"name": ..., "arguments": {...}}` (or a list of them)
or with plain text; `parse_calls` takes the first such JSON in the reply, code fences and
surrounding text allowed. With `[tools] implementations` the calls are executed (a Python
callable "module:function" looked up when first used, a module file in the task folder
first, or an http(s) URL receiving the arguments as a JSON POST), the results go back to the
model, and the loop continues until a plain answer or `max_steps` turns. Every turn (raw
text, calls, results, errors) is kept as the prediction's trace; the output scored is
`{"calls": [...], "answer": "..."}`. The first turn of a chunk is one batched generate call.
Deliberately skipped: streaming, tool_choice, parallel execution of one turn's calls,
sandboxing of Python tools (they run in-process: only declare code you trust).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_ladder.data import Example, Messages
from llm_ladder.errors import LadderError
from llm_ladder.models.base import Generation, GenParams
from llm_ladder.rungs import Pipeline, RungContext, as_messages
from llm_ladder.task import Task, ToolsConfig

Tool = dict[str, Any]  # {"type": "function", "function": {"name", "description", "parameters"}}
Call = dict[str, Any]  # {"name": str, "arguments": dict | str, ("id": str)}
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RESULT_CHARS = 4000  # a tool result is cut to this many characters before the model sees it
TOOL_RUNGS = ["tool-use", "few-shot-tools"]
NO_CALL = "None of the tools fits this request."


# ---- schemas ------------------------------------------------------------------------------

def check_tools(raw: Any, file: Path | str) -> list[Tool]:
    """Validate OpenAI-format tools; errors name the file, the tool and the field."""
    import jsonschema

    if isinstance(raw, dict) and isinstance(raw.get("tools"), list):
        raw = raw["tools"]
    if not isinstance(raw, list):
        raise LadderError(f"{file}: expected a JSON list of tools (OpenAI format), got "
                          f"{type(raw).__name__}")
    tools: list[Tool] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        name = (item.get("function") or {}).get("name") if isinstance(item, dict) else None
        where = f"{file}: tool {i}" + (f" ({name!r})" if isinstance(name, str) else "")

        def bad(fld: str, msg: str, where: str = where) -> LadderError:
            return LadderError(f"{where}: {fld}: {msg}")

        if not isinstance(item, dict):
            raise bad("(tool)", f"must be an object, got {type(item).__name__}")
        if item.get("type") != "function":
            raise bad("type", f"must be \"function\", got {item.get('type')!r}")
        fn = item.get("function")
        if not isinstance(fn, dict):
            raise bad("function", "must be an object with name, description, parameters")
        unknown = set(fn) - {"name", "description", "parameters", "strict"}
        if unknown:
            raise bad("function", f"unknown key(s) {', '.join(sorted(unknown))}")
        if not isinstance(name, str) or not NAME.match(name):
            raise bad("function.name", f"{name!r} must be 1-64 letters, digits, '_' or '-'")
        if name in seen:
            raise bad("function.name", f"{name!r} is declared twice")
        seen.add(name)
        if not isinstance(fn.get("description", ""), str):
            raise bad("function.description", "must be a string")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict) or params.get("type") != "object":
            raise bad("function.parameters", "must be a JSON schema with \"type\": \"object\"")
        try:
            jsonschema.Draft202012Validator.check_schema(params)
        except jsonschema.SchemaError as e:
            path = ".".join(str(p) for p in e.absolute_path)
            raise bad("function.parameters" + (f".{path}" if path else ""),
                      e.message) from None
        props = params.get("properties", {})
        missing = [r for r in params.get("required", []) if r not in props]
        if missing:
            raise bad("function.parameters.required",
                      f"names {', '.join(missing)}, not in properties")
        tools.append({"type": "function", "function": {**fn, "parameters": params}})
    return tools


def load_tools(path: Path) -> list[Tool]:
    if not path.is_file():
        raise LadderError(f"{path}: tools file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LadderError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}"
                          ) from None
    return check_tools(raw, path)


def tool_line(tool: Tool, width: int = 120) -> str:
    """A compact description for prompts: name, description, one line per argument."""
    fn = tool["function"]
    params = fn.get("parameters") or {}
    required = set(params.get("required", []))
    lines = [f"- {fn['name']}: {_cut(fn.get('description', ''), width)}"]
    for arg, spec in (params.get("properties") or {}).items():
        kind = spec.get("type", "any")
        if kind == "array" and isinstance(spec.get("items"), dict):
            kind = f"array of {spec['items'].get('type', 'any')}"
        bits = [str(kind)] + (["required"] if arg in required else [])
        extra = ""
        if "enum" in spec:
            extra += " One of: " + ", ".join(json.dumps(v) for v in spec["enum"]) + "."
        if "default" in spec:
            extra += f" Default {json.dumps(spec['default'])}."
        lines.append(f"    {arg} ({', '.join(bits)}): "
                     f"{_cut(spec.get('description', ''), width)}{extra}")
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---- the prompted JSON protocol -----------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def _json_values(text: str):
    """JSON objects and lists found in the text: inside ``` fences first, then anywhere."""
    dec = json.JSONDecoder()
    for block in [*_FENCE.findall(text), text]:
        i = 0
        while (m := re.compile(r"[\[{]").search(block, i)) is not None:
            try:
                value, end = dec.raw_decode(block, m.start())
            except json.JSONDecodeError:
                i = m.start() + 1
                continue
            yield value
            i = end


def _as_call(value: Any) -> Call | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict) and "name" not in value:
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return None
    if set(value) - {"name", "arguments", "parameters", "id", "type"}:
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass
    return {"name": name, "arguments": args}


def parse_calls(text: str) -> list[Call]:
    """The first JSON call (or list of calls) in a reply; [] when it makes none."""
    for value in _json_values(text):
        if isinstance(value, list) and value:
            calls = [_as_call(v) for v in value]
            if all(calls):
                return [c for c in calls if c]
        elif (call := _as_call(value)) is not None:
            return [call]
    return []


def protocol_rules(tool_text: str | None) -> str:
    head = f"You can call these tools:\n{tool_text}\n" if tool_text else (
        "You can call the tools listed with each request.\n")
    return (head + 'To call a tool, reply with only a JSON object {"name": "<tool name>", '
            '"arguments": {"<argument>": <value>}}. If no tool fits the request, reply in '
            "plain text without JSON.")


# ---- executing calls ----------------------------------------------------------------------

class Executor:
    """Runs tool calls: "module:function" (looked up on first use) or an http(s) URL."""

    def __init__(self, targets: dict[str, str], root: Path, timeout_s: float = 30.0):
        self.targets = targets
        self.root = root
        self.timeout_s = timeout_s
        self._funcs: dict[str, Callable[..., Any]] = {}

    def kinds(self) -> dict[str, str]:
        return {n: ("http" if t.startswith(("http://", "https://")) else "python")
                for n, t in sorted(self.targets.items())}

    def _func(self, name: str) -> Callable[..., Any]:
        if name in self._funcs:
            return self._funcs[name]
        target = self.targets[name]
        module, _, attr = target.partition(":")
        local = self.root / (module.replace(".", "/") + ".py")
        try:
            if local.is_file():
                spec = importlib.util.spec_from_file_location(f"_ladder_tools_{module}", local)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load {local}")
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
            else:
                mod = importlib.import_module(module)
            fn = getattr(mod, attr)
        except (ImportError, AttributeError, SyntaxError) as e:
            raise LadderError(f"[tools] implementations.{name}: cannot load {target!r}: "
                              f"{type(e).__name__}: {e}") from None
        if not callable(fn):
            raise LadderError(f"[tools] implementations.{name}: {target!r} is not callable")
        self._funcs[name] = fn
        return fn

    def run(self, call: Call) -> tuple[str, str | None]:
        """(result text for the model, error or None); a failing tool never stops the run."""
        name, args = call["name"], call["arguments"]
        if name not in self.targets:
            return f"error: no tool named {name!r} can be run", f"no implementation for {name!r}"
        if not isinstance(args, dict):
            return "error: arguments must be a JSON object", "arguments are not an object"
        target = self.targets[name]
        try:
            if target.startswith(("http://", "https://")):
                out: Any = self._post(target, args)
            else:
                fn = self._func(name)
                with ThreadPoolExecutor(max_workers=1) as pool:
                    out = pool.submit(fn, **args).result(timeout=self.timeout_s)
        except LadderError:
            raise
        except FutureTimeout:
            return (f"error: {name} timed out", f"timed out after {self.timeout_s:g} s")
        except Exception as e:  # the tool's own failure goes back to the model
            msg = f"{type(e).__name__}: {e}"[:300]
            return f"error: {msg}", msg
        text = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False,
                                                           default=str)
        return text[:RESULT_CHARS], None

    def _post(self, url: str, args: dict[str, Any]) -> str:
        req = urllib.request.Request(url, data=json.dumps(args).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.read(RESULT_CHARS * 4).decode("utf-8", "replace")
        except urllib.error.HTTPError as e:  # the URL may hold a token: never echo it
            raise RuntimeError(f"HTTP {e.code}: "
                               f"{e.read(200).decode('utf-8', 'replace')}") from None
        except urllib.error.URLError as e:
            raise RuntimeError(f"cannot reach the tool's endpoint: {e.reason}") from None


# ---- the loop -----------------------------------------------------------------------------

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


def _native_message(text: str, calls: list[Call]) -> dict[str, Any]:
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
                convs[i].append(_native_message(gen.text, made))
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
        p = GenParams(params.max_tokens, params.temperature, params.stop, tools[idx[0]] or None)
        for i, g in zip(idx, model.generate([convs[i] for i in idx], p), strict=True):
            out[i] = g
    return [g for g in out if g is not None]


# ---- the rungs ----------------------------------------------------------------------------

class ToolSetup:
    """What both rungs share: the catalog, who executes, how requests are written."""

    def __init__(self, task: Task):
        if task.tools is None:
            raise LadderError(f"{task.name}: the tool-use rungs need a [tools] section in "
                              "task.toml (see docs/tools.md)")
        self.cfg: ToolsConfig = task.tools
        self.file = task.path(self.cfg.file) if self.cfg.file else None
        self.tools = load_tools(self.file) if self.file else []
        self.by_name = {t["function"]["name"]: t for t in self.tools}
        self._own: dict[str, list[Tool]] = {}
        for name, target in self.cfg.implementations.items():
            if self.file and name not in self.by_name:
                raise LadderError(f"{task.root / 'task.toml'}: [tools] implementations names "
                                  f"{name!r}, which {self.file} does not declare")
            if not (target.startswith(("http://", "https://"))
                    or re.match(r"^[\w.]+:\w+$", target)):
                raise LadderError(f"{task.root / 'task.toml'}: [tools] implementations."
                                  f"{name} = {target!r}: use \"module:function\" or an "
                                  "http(s) URL")
        self.executor = (Executor(self.cfg.implementations, task.root, self.cfg.timeout_s)
                         if self.cfg.implementations else None)
        self.description = task.description.strip()
        self.task = task

    def native(self, model: Any) -> bool:
        p = self.cfg.protocol
        return p == "native" or (p == "auto" and bool(getattr(model, "supports_tools", False)))

    def offered(self, ex: Example) -> list[Tool] | None:
        """The example's own tools (meta.tools: names from the tools file and/or tool objects
        in the OpenAI format), or None when it offers the task's whole list."""
        items = ex.meta.get("tools") if ex.meta else None
        if items is None:
            return None
        where = f"{ex.source or ex.id}: meta.tools"
        key = f"{where}:{json.dumps(items, sort_keys=True)}"
        if key in self._own:
            return self._own[key]
        if not isinstance(items, list):
            raise LadderError(f"{where}: must be a list of tool names or tool objects")
        unknown = [n for n in items if isinstance(n, str) and n not in self.by_name]
        if unknown:
            raise LadderError(f"{where}: names {', '.join(unknown)}, not declared in "
                              f"{self.file or 'a [tools] file'}")
        inline = check_tools([t for t in items if not isinstance(t, str)], where)
        it = iter(inline)
        own = [self.by_name[t] if isinstance(t, str) else next(it) for t in items]
        names = [t["function"]["name"] for t in own]
        if len(set(names)) != len(names):
            raise LadderError(f"{where}: a tool name appears twice")
        self._own[key] = own
        return own

    def system(self, native: bool, per_example: bool) -> str:
        parts = [self.description] if self.description else []
        if not native:
            parts.append(protocol_rules(None if per_example else
                                        "\n".join(tool_line(t) for t in self.tools)))
        elif self.description == "":
            parts.append("Use the tools when they fit the request.")
        return "\n".join(parts)

    def user_turns(self, ex: Example, native: bool) -> Messages:
        msgs = as_messages(ex.input)
        own = self.offered(ex)
        if own is None or native:
            return msgs
        listing = "Tools:\n" + "\n".join(tool_line(t) for t in own) if own else "Tools: (none)"
        last = msgs[-1]
        return msgs[:-1] + [{**last, "content": f"{listing}\n\nRequest: {last['content']}"}]

    def shot_turns(self, ex: Example, native: bool) -> Messages:
        """A train example as earlier turns: its request, then its call(s) or answer."""
        from llm_ladder.tool_metrics import BadReference, canonical_call, read_reference

        try:
            want = read_reference(ex.output)
        except BadReference:
            want = ex.output
        turns = self.user_turns(ex, native)
        if isinstance(want, str):
            return turns + [{"role": "assistant", "content": want}]
        if not want:
            return turns + [{"role": "assistant", "content": NO_CALL}]
        calls = [canonical_call(w) for w in want]
        if native:
            ids = [{**c, "id": f"shot_{ex.id}_{k}"} for k, c in enumerate(calls)]
            return turns + [_native_message("", ids)] + [
                {"role": "tool", "tool_call_id": c["id"], "content": "(example: not run)"}
                for c in ids]
        text = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
        return turns + [{"role": "assistant", "content": text}]

    def request(self, ex: Example, native: bool, shots: list[Example]) -> Request:
        per_example = self.offered(ex) is not None
        earlier: Messages = []
        tools = self.offered(ex) or ([] if per_example else list(self.tools))
        for s in shots:
            earlier += self.shot_turns(s, native)
            if native and per_example:  # shots' tools must exist for their calls
                tools += [t for t in (self.offered(s) or []) if t not in tools]
        system = self.system(native, per_example)
        msgs = ([{"role": "system", "content": system}] if system else []) + earlier \
            + self.user_turns(ex, native)
        return Request(msgs, tools)

    def settings(self) -> dict[str, Any]:
        blob = json.dumps(self.tools, sort_keys=True).encode()
        return {"tools_file": self.cfg.file, "tools": len(self.tools),
                "tools_sha256": hashlib.sha256(blob).hexdigest()[:12],
                "protocol": self.cfg.protocol, "max_steps": self.cfg.max_steps,
                "implementations": self.executor.kinds() if self.executor else {}}

    def pipeline(self, rung: str, ctx: RungContext,
                 pick_shots: Callable[[Example], list[Example]] | None,
                 extra: dict[str, Any] | None = None) -> Pipeline:
        gen = ctx.task.generation
        params = GenParams(max_tokens=gen.max_tokens, temperature=gen.temperature)

        def shots(ex: Example) -> list[Example]:
            return pick_shots(ex) if pick_shots else []

        def build(inp: str | Messages) -> Messages:  # JSON protocol, the task's tools
            ex = Example("", inp, "")
            return self.request(ex, False, shots(ex)).messages

        def loop(model: Any, examples: list[Example]) -> list[LoopResult]:
            native = self.native(model)
            reqs = [self.request(ex, native, shots(ex)) for ex in examples]
            return run_loop(model, reqs, params, native, self.executor, self.cfg.max_steps)

        return Pipeline(rung, build, params, settings={**self.settings(), **(extra or {})},
                        loop=loop)


class ToolUse:
    name = "tool-use"
    description = "the model may call the task's tools (native calls or a JSON protocol)"

    def build(self, ctx: RungContext) -> Pipeline:
        return ToolSetup(ctx.task).pipeline(self.name, ctx, None)


class FewShotTools:
    name = "few-shot-tools"
    description = "tool-use + the k nearest train examples (their calls) as earlier turns"

    def build(self, ctx: RungContext) -> Pipeline:
        from llm_ladder.embedding import Embedder

        setup = ToolSetup(ctx.task)
        embedder = Embedder()
        k = min(ctx.task.prompt.few_shot_k, len(ctx.train))
        pool = ctx.train
        vecs = embedder.embed([e.input_text() for e in pool]) if pool else None
        cache: dict[str, list[Example]] = {}

        def pick(ex: Example) -> list[Example]:
            text = ex.input_text()
            if vecs is None or k == 0:
                return []
            if text not in cache:
                sims = vecs @ embedder.embed([text])[0]
                best = sorted(range(len(pool)), key=lambda i: -sims[i])[:k]
                cache[text] = [pool[i] for i in reversed(best)]  # nearest last
            return cache[text]

        return setup.pipeline(self.name, ctx, pick,
                              {"k": k, "embedder": embedder.name, "pool": len(pool)})
