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

from llm_ladder.data import Example, load_examples
from llm_ladder.errors import LadderError
from llm_ladder.ladder import climb, recommend, run_rung
from llm_ladder.metrics import Metric, Score, build_metric
from llm_ladder.models import build_model
from llm_ladder.models.base import ChatModel, Generation, GenParams
from llm_ladder.results import LadderResult, Recommendation, Summary
from llm_ladder.rungs.base import Pipeline, Rung, RungContext, get_rung
from llm_ladder.session import Prepared, Session, open_session, prepare
from llm_ladder.store import Store
from llm_ladder.task import Task, load_task

__version__ = "0.1.0"
__all__ = ["Example", "load_examples", "LadderError", "climb", "recommend", "run_rung",
           "Metric", "Score", "build_metric", "build_model", "ChatModel", "Generation",
           "GenParams", "LadderResult", "Recommendation", "Summary", "Pipeline", "Rung",
           "RungContext", "get_rung", "Prepared", "Session", "open_session", "prepare",
           "Store", "Task", "load_task"]
