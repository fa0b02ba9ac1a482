"""Model backends. `base` holds the protocol; each backend is one module, loaded lazily
through the `llm_ladder.models` entry points (`build_model`)."""

from __future__ import annotations

from llm_ladder import plugins
from llm_ladder.models.base import ChatModel
from llm_ladder.task import ModelConfig


def build_model(cfg: ModelConfig) -> ChatModel:
    """The backend registered as `cfg.backend`, built with the rest of the model settings."""
    factory = plugins.get("models", cfg.backend)
    return factory(**cfg.model_dump(exclude={"backend"}))
