"""The prompted JSON protocol: the rules shown to a model without native tool calls, and
reading the calls back out of its reply (code fences and surrounding text allowed).
"""

from __future__ import annotations

import json
import re
from typing import Any

from llm_ladder.tools.schemas import Call

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
