"""Tool schemas in the OpenAI tools format: validation with errors naming the file, the tool
and the field, and the compact one-line-per-argument listing used in prompts.

Skipped: tool_choice and strict-mode schemas.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError

Tool = dict[str, Any]  # {"type": "function", "function": {"name", "description", "parameters"}}
Call = dict[str, Any]  # {"name": str, "arguments": dict | str, ("id": str)}
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
