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
