"""Entry-point registries for models, metrics and rungs.

Built-ins are declared in pyproject.toml under the same groups a third-party package uses
(`llm_ladder.models`, `llm_ladder.metrics`, `llm_ladder.rungs`). Lookups fail loudly with the
list of known names. `register` adds one in-process (handy in notebooks and tests) and
refuses duplicates. The installed entry points are read once per process (scanning every
installed distribution costs milliseconds, and the decision looks metrics up in loops).
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from llm_ladder.errors import LadderError

GROUPS = {"models": "llm_ladder.models", "metrics": "llm_ladder.metrics",
          "rungs": "llm_ladder.rungs"}
_extra: dict[str, dict[str, Any]] = {k: {} for k in GROUPS}


@cache
def _installed(kind: str) -> tuple[EntryPoint, ...]:
    return tuple(entry_points(group=GROUPS[kind]))


def names(kind: str) -> list[str]:
    eps = {ep.name for ep in _installed(kind)}
    return sorted(eps | set(_extra[kind]))


def get(kind: str, name: str) -> Any:
    """The class or factory registered under `name` in `kind`."""
    if name in _extra[kind]:
        return _extra[kind][name]
    for ep in _installed(kind):
        if ep.name == name:
            return ep.load()
    singular = kind.rstrip("s")
    raise LadderError(f"unknown {singular} {name!r}; known: {', '.join(names(kind))}")


def register(kind: str, name: str, obj: Any) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise LadderError(f"bad {kind} name {name!r}: use letters, digits, '-' and '_'")
    if name in names(kind):
        raise LadderError(f"{kind} {name!r} is already registered")
    _extra[kind][name] = obj


def unregister(kind: str, name: str) -> None:
    _extra[kind].pop(name, None)
