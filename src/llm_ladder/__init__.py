"""llm-ladder: decide between prompting, RAG and fine-tuning with measured evidence.

The Python API uses the same nouns as the CLI. `climb` is `ladder run`:

    from llm_ladder import climb
    result = climb("examples/construction-faq", rungs=["zero-shot", "few-shot-nearest"])
    print(result.recommendation["reason"])

One rung at a time, on an opened session (data split, index when needed, model loaded):

    from llm_ladder import open_session, run_rung
    s = open_session("examples/construction-faq", rungs=["few-shot-nearest"])
    run = run_rung(s.prep, "few-shot-nearest", s.model_key, s.model, s.store)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module: imported on first use, so `import llm_ladder.x` (a parser or tool worker
# process, the CLI) does not pay for the whole library
_EXPORTS = {
    "Example": "data", "load_examples": "data", "LadderError": "errors", "climb": "ladder",
    "recommend": "ladder", "run_rung": "ladder", "Metric": "metrics", "Score": "metrics",
    "build_metric": "metrics", "build_model": "models", "ChatModel": "models.base",
    "Generation": "models.base", "GenParams": "models.base", "LadderResult": "results",
    "Recommendation": "results", "Summary": "results", "Pipeline": "rungs.base",
    "Rung": "rungs.base", "RungContext": "rungs.base", "get_rung": "rungs.base",
    "Prepared": "session", "Session": "session", "open_session": "session",
    "prepare": "session", "Store": "store", "Task": "task", "load_task": "task",
    "plugins": None,
}
__all__ = [n for n in _EXPORTS if n != "plugins"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'llm_ladder' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module is None:
        return importlib.import_module(f"llm_ladder.{name}")
    value = getattr(importlib.import_module(f"llm_ladder.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
