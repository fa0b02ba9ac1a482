"""Model backends. `base` holds the protocol; each backend is one module, loaded lazily
through the `llm_ladder.models` entry points (`build_model`).

A backend declares the `[models.*]` settings it uses by naming them as parameters; the rest
land in a `**_` catch-all. A setting written in task.toml that the chosen backend would
ignore (`dtype` on llamacpp, `batch_size` on openai) is refused with its name instead of
silently doing nothing. A backend whose catch-all has another name (`**kw`) is taken to
forward it and is not checked.
"""

from __future__ import annotations

import inspect
from typing import Any

from llm_ladder import plugins
from llm_ladder.errors import LadderError
from llm_ladder.models.base import ChatModel
from llm_ladder.task import ModelConfig


def ignored_settings(factory: Any, cfg: ModelConfig) -> list[str]:
    """The settings set in `cfg` (not defaults) that `factory` does not name as parameters."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: nothing to check
        return []
    if any(p.kind is p.VAR_KEYWORD and p.name != "_" for p in params):
        return []
    named = {p.name for p in params if p.kind is not p.VAR_KEYWORD}
    return sorted(cfg.model_fields_set - named - {"backend"})


def build_model(cfg: ModelConfig) -> ChatModel:
    """The backend registered as `cfg.backend`, built with the rest of the model settings."""
    factory = plugins.get("models", cfg.backend)
    if ignored := ignored_settings(factory, cfg):
        raise LadderError(
            f"model {cfg.name!r}: the {cfg.backend} backend does not use "
            f"{', '.join(f'`{k}`' for k in ignored)}; remove "
            f"{'it' if len(ignored) == 1 else 'them'} from its [models.*] table "
            "(docs/models.md lists what each backend reads)")
    return factory(**cfg.model_dump(exclude={"backend"}))
