"""llm-ladder: decide between prompting, RAG and fine-tuning with measured evidence.

The Python API uses the same nouns as the CLI:

    from llm_ladder import load_task, prepare, build_model, run_rung, Store
    task = load_task("examples/construction-faq")
    prep = prepare(task)
    model = build_model(task.model())
    run = run_rung(prep, "few-shot-nearest", "default", model, Store(task.state_dir / "runs.db"))
"""

from llm_ladder.data import Example, load_examples
from llm_ladder.errors import LadderError
from llm_ladder.ladder import build_model, prepare, recommend, run_rung
from llm_ladder.metrics import Metric, Score, build_metric
from llm_ladder.models.base import ChatModel, Generation, GenParams
from llm_ladder.rungs import Pipeline, Rung, RungContext, get_rung
from llm_ladder.store import Store
from llm_ladder.task import Task, load_task

__version__ = "0.1.0"
__all__ = ["Example", "load_examples", "LadderError", "build_model", "prepare", "recommend",
           "run_rung", "Metric", "Score", "build_metric", "ChatModel", "Generation",
           "GenParams", "Pipeline", "Rung", "RungContext", "get_rung", "Store", "Task",
           "load_task"]
