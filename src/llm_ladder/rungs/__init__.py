"""The rungs of the ladder, one module per family: prompting, rag, tools, finetune, distill.

`rungs.base` holds what they share (`Rung`, `Pipeline`, `RungContext`, the default ladder,
nearest-shot selection). Built-in rungs are registered through the `llm_ladder.rungs` entry
points in pyproject.toml, exactly as a plugin's are.
"""

from llm_ladder.rungs.base import (
    DEFAULT_LADDER,
    NearestShots,
    Pipeline,
    Rung,
    RungContext,
    as_messages,
    get_rung,
    instructions,
    ladder_for,
    missing_needs,
    needs_of,
)

__all__ = ["DEFAULT_LADDER", "NearestShots", "Pipeline", "Rung", "RungContext", "as_messages",
           "get_rung", "instructions", "ladder_for", "missing_needs", "needs_of"]
