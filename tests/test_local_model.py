"""The embedded model, for real: exact greedy output, batching that changes nothing."""

from llm_ladder.models.base import GenParams

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_exact_greedy_output(smol):
    (gen,) = smol.generate([FRANCE], GenParams(max_tokens=20))
    assert gen.error is None
    assert gen.text == "The capital of France is Paris."
    assert gen.finish_reason == "stop"  # stopped at <|im_end|>, not at max_tokens
    assert gen.tokens_in == smol.count_tokens(FRANCE) > 10
    assert gen.tokens_out == 8  # 7 text tokens + the end-of-turn token


def test_batched_equals_one_at_a_time(smol):
    prompts = [FRANCE,
               [{"role": "user", "content": "Name a primary colour."}],
               [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "What colour is the sky on a clear day?"}]]
    params = GenParams(max_tokens=12)
    batched = [g.text for g in smol.generate(prompts, params)]
    single = [smol.generate([p], params)[0].text for p in prompts]
    assert batched == single
    assert all(batched)


def test_prompt_longer_than_context_fails_loudly(smol):
    huge = [{"role": "user", "content": "word " * (smol.context_length + 10)}]
    gens = smol.generate([huge, FRANCE], GenParams(max_tokens=8))
    assert gens[0].error and "exceeds context" in gens[0].error
    assert gens[1].error is None and "Paris" in gens[1].text


def test_second_load_uses_cached_safetensors(smol):
    assert (smol.folder / "model.safetensors").is_file()
    assert not list(smol.folder.glob("*.bin")) and not list(smol.folder.glob("*.pt"))


def test_eos_list_does_not_grow_across_batches(smol):
    """`generation_config.eos_token_id` as a list was appended to in place once per batch."""
    from llm_ladder.models.base import GenParams

    config = smol.model.generation_config
    saved = config.eos_token_id
    try:
        config.eos_token_id = [saved] if not isinstance(saved, list) else list(saved)
        before = list(config.eos_token_id)
        for _ in range(3):
            smol.generate([[{"role": "user", "content": "Hi"}]], GenParams(max_tokens=1))
        assert config.eos_token_id == before
        assert len(smol._eos_ids()) == len(set(smol._eos_ids()))
    finally:
        config.eos_token_id = saved


def test_batch_size_defaults_to_the_backends_own():
    """Unset, `batch_size` is each backend's default (local 16: ~1.4x the throughput of 8
    here); set, it is used as given."""
    from llm_ladder.models import build_model
    from llm_ladder.task import ModelConfig

    assert ModelConfig().batch_size is None
    assert build_model(ModelConfig()).batch_size == 16
    assert build_model(ModelConfig(batch_size=3)).batch_size == 3
