"""Anti-loop generation settings (repetition_penalty, no_repeat_ngram_size): the real local
and llama.cpp backends honour them, the rule matches transformers', the task validates them,
every run stores them, and the openai backend refuses them instead of dropping them."""

from __future__ import annotations

import random

import numpy as np
import pytest
from test_climb import ROWS
from typer.testing import CliRunner

from llm_ladder import climb
from llm_ladder.cli import app
from llm_ladder.errors import LadderError
from llm_ladder.models.base import GenParams
from llm_ladder.models.constrain import anti_loop_numpy, banned_by_ngram
from llm_ladder.session import open_task
from llm_ladder.task import load_task
from llm_ladder.testing import write_task

# Within 24 greedy tokens the 135M model repeats words on this prompt on both backends.
LOOPS = [{"role": "user", "content": "Say yes yes yes yes yes yes"}]


def repeats(text: str, n: int = 1) -> bool:
    """Whether some word n-gram occurs twice."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.fixture(scope="module")
def lcpp():
    from llm_ladder.models.llamacpp import LlamaCppModel

    return LlamaCppModel(threads=2)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "llamacpp"])
def test_real_backend_loops_without_and_not_with_the_setting(backend, smol, lcpp):
    model = smol if backend == "local" else lcpp
    (plain,) = model.generate([LOOPS], GenParams(max_tokens=24, repetition_penalty=1.0,
                                                 no_repeat_ngram_size=0))
    (guarded,) = model.generate([LOOPS], GenParams(max_tokens=24, no_repeat_ngram_size=1))
    assert repeats(plain.text), plain.text
    assert not repeats(guarded.text), guarded.text


def test_llamacpp_rule_is_transformers_rule():
    """The numpy processor (llama.cpp) bans and penalizes exactly what transformers' own
    processors do on the same answer tokens."""
    torch = pytest.importorskip("torch")
    gen = pytest.importorskip("transformers").generation
    rng = random.Random(0)
    for _ in range(50):
        prompt = [rng.randrange(12) for _ in range(rng.randrange(0, 6))]
        answer = [rng.randrange(12) for _ in range(rng.randrange(0, 12))]
        n, pen = rng.choice([1, 2, 3]), rng.choice([1.0, 1.3])
        scores = torch.randn(1, 12)
        ref = gen.NoRepeatNGramLogitsProcessor(n)(torch.tensor([answer]), scores.clone())
        if pen != 1.0 and answer:
            ref = gen.RepetitionPenaltyLogitsProcessor(pen)(torch.tensor([answer]), ref)
        ours = anti_loop_numpy(pen, n, start=len(prompt))(
            np.array(prompt + answer), scores[0].numpy().copy())
        assert torch.allclose(torch.tensor(ours), ref[0]), (prompt, answer, n, pen)
    assert banned_by_ngram([1, 2, 3, 1, 2], 3) == {3}
    assert banned_by_ngram([1, 2], 3) == set()


def test_task_validates_the_settings(tmp_path):
    bad = write_task(tmp_path / "bad", ROWS, answers=["x"],
                     extra="[generation]\nrepetition_penalty = 0.5\n")
    with pytest.raises(LadderError, match="repetition_penalty"):
        load_task(bad)


def test_settings_are_stored_with_the_run(tmp_path):
    task = write_task(tmp_path / "t", ROWS, answers=["alpha"],
                      extra='[rungs]\ninclude = ["zero-shot"]\n[generation]\n'
                      "repetition_penalty = 1.3\nno_repeat_ngram_size = 4\n")
    climb(task, report=False)
    _, store = open_task(task)
    (run,) = store.list_runs(5)
    assert run["config"]["params"]["repetition_penalty"] == 1.3
    assert run["config"]["params"]["no_repeat_ngram_size"] == 4
    shown = CliRunner().invoke(app, ["show", run["id"], "--task", str(task), "--limit", "0"])
    assert "no_repeat_ngram_size=4, repetition_penalty=1.3" in shown.output, shown.output


def test_openai_backend_refuses_instead_of_dropping():
    pytest.importorskip("openai")
    from llm_ladder.models.openai import OpenAIModel

    m = OpenAIModel(name="x", base_url="http://127.0.0.1:9/v1", max_retries=0)
    for p in (GenParams(repetition_penalty=1.2), GenParams(no_repeat_ngram_size=3)):
        with pytest.raises(LadderError, match="frequency/presence"):
            m.generate([LOOPS], p)
