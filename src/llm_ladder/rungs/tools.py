"""The tool-use rungs: tool-use and few-shot-tools.

Tools are declared in a JSON file in the OpenAI tools format (`[tools] file`). Each example
may offer a subset through `meta.tools` (a list of tool names); those are listed in its own
user turn, so few-shot turns show their own tools. Otherwise the task's tools are listed once
in the system prompt. The mechanics (schemas, call parsing, the loop, the executor, the
metric) live in `llm_ladder.tools`; these rungs only write the requests.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from llm_ladder.data import Example, Messages
from llm_ladder.errors import LadderError
from llm_ladder.rungs.base import NearestShots, Pipeline, RungContext, as_messages, gen_params
from llm_ladder.task import Task, ToolsConfig
from llm_ladder.tools.calls import protocol_rules
from llm_ladder.tools.executor import Executor
from llm_ladder.tools.loop import LoopResult, Request, native_message, run_loop
from llm_ladder.tools.metric import BadReference, canonical_call, read_reference
from llm_ladder.tools.schemas import Tool, check_tools, load_tools, tool_line

NO_CALL = "None of the tools fits this request."


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
            return turns + [native_message("", ids)] + [
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
        params = gen_params(ctx)

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
    needs = frozenset({"tools"})

    def build(self, ctx: RungContext) -> Pipeline:
        return ToolSetup(ctx.task).pipeline(self.name, ctx, None)


class FewShotTools:
    name = "few-shot-tools"
    description = "tool-use + the k nearest train examples (their calls) as earlier turns"
    needs = frozenset({"tools"})

    def build(self, ctx: RungContext) -> Pipeline:
        setup = ToolSetup(ctx.task)
        nearest = NearestShots(ctx.train, ctx.task.prompt.few_shot_k)
        return setup.pipeline(self.name, ctx, lambda ex: nearest(ex.input_text()),
                              nearest.settings())
