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


def test_the_same_gguf_elsewhere_reuses_the_conversion(smol, tmp_path):
    """The conversion is keyed by the GGUF's bytes, not its path: a copy in another folder (a
    second venv, a reinstall) resolves to the folder already converted, with no new copy."""
    import os
    import shutil

    from llm_ladder.models.local import resolve_weights, smollm2_gguf

    copy = tmp_path / "elsewhere" / smollm2_gguf().name
    copy.parent.mkdir()
    shutil.copyfile(smollm2_gguf(), copy)
    os.utime(copy, ns=(1, 1))  # another modification time too
    before = sorted(smol.folder.parent.iterdir())
    assert resolve_weights("mine", str(copy)) == smol.folder
    assert sorted(smol.folder.parent.iterdir()) == before


def test_file_hash_is_computed_once_per_version_of_the_file(tmp_path, monkeypatch):
    """`file_sha256` (the key of the GGUF and int8-export caches) reads a file once per
    process, and again when the file changes."""
    import hashlib
    import os

    from llm_ladder.models import local

    calls = []
    digest = hashlib.file_digest

    def counted(f, name):
        calls.append(name)
        return digest(f, name)

    monkeypatch.setattr(local.hashlib, "file_digest", counted)
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"one")
    first = local.file_sha256(weights)
    assert first == hashlib.sha256(b"one").hexdigest()
    assert local.file_sha256(weights) == first and len(calls) == 1
    weights.write_bytes(b"two")
    os.utime(weights, ns=(2, 2))
    assert local.file_sha256(weights) == hashlib.sha256(b"two").hexdigest()
    assert len(calls) == 2


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
    """Unset, `batch_size` is each backend's default (local 64: ~1.4x the throughput of 16
    here) with the KV-cache budget `batch_tokens`; set, both are used as given, and a backend
    that has no such setting refuses it by name."""
    import pytest

    from llm_ladder.errors import LadderError
    from llm_ladder.models import build_model
    from llm_ladder.models.local import DEFAULT_BATCH_TOKENS
    from llm_ladder.task import ModelConfig

    assert ModelConfig().batch_size is None
    default = build_model(ModelConfig())
    assert (default.batch_size, default.batch_tokens) == (64, DEFAULT_BATCH_TOKENS)
    assert default.share_prefix is True
    set_ = build_model(ModelConfig(batch_size=3, batch_tokens=1000, share_prefix=False))
    assert (set_.batch_size, set_.batch_tokens, set_.share_prefix) == (3, 1000, False)
    with pytest.raises(LadderError, match="`batch_tokens`"):
        build_model(ModelConfig(backend="llamacpp", batch_tokens=1000))


def test_batches_keep_to_the_row_limit_and_the_kv_cache_budget():
    from llm_ladder.models.local import batches

    lengths = [40, 10, 30, 20, 1500, 45]
    # shortest first, at most 2 rows
    assert batches(lengths, 10, rows=2, positions=10_000) == [[1, 3], [2, 0], [5, 4]]
    # budget 120 positions: 3 x (30 + 10) = 120 fits, 4 x (40 + 10) does not, 2 x (45 + 10)
    # does; a prompt over the budget on its own runs alone
    assert batches(lengths, 10, rows=64, positions=120) == [[1, 3, 2], [0, 5], [4]]
    assert sorted(sum(batches(lengths, 64, 64, 24_576), [])) == list(range(6))


def test_shared_prefix_leaves_every_row_a_token_and_ignores_short_ones():
    from llm_ladder.models.local import MIN_SHARED_PREFIX, shared_prefix

    head = list(range(100, 120))
    assert shared_prefix([head + [1, 2], head + [3], head + [1, 4, 5]]) == 20
    # the shortest prompt keeps its last token to predict from
    assert shared_prefix([head + [1], head + [1, 2]]) == 20
    assert shared_prefix([head, head + [1]]) == 19
    short = head[:MIN_SHARED_PREFIX - 1]
    assert shared_prefix([short + [1], short + [2]]) == 0
    assert shared_prefix([[1] + head, [2] + head]) == 0


def test_a_shared_prefix_runs_once_and_changes_no_answer(smol):
    """The rows' common prefix (here the chat template's system prompt and turn header) is
    run once for the batch: the model runs (rows - 1) x prefix fewer positions, and every
    answer is the one of plain left padding, and of the prompt alone."""
    from llm_ladder.models.local import shared_prefix

    prompts = [FRANCE, [{"role": "user", "content": "Name a primary colour."}],
               [{"role": "user", "content": "Which tool measures a right angle on a "
                                            "building site?"}]]
    params = GenParams(max_tokens=12)
    shared = shared_prefix([smol._ids(p) for p in prompts])
    assert shared >= 20
    positions: list[int] = []
    hook = smol.model.get_input_embeddings().register_forward_hook(
        lambda module, args, out: positions.append(args[0].numel()))
    saved = smol.share_prefix
    try:
        smol.share_prefix = False
        plain = [g.text for g in smol.generate(prompts, params)]
        run_plain, positions[:] = sum(positions), []
        smol.share_prefix = True
        once = [g.text for g in smol.generate(prompts, params)]
        run_once = sum(positions)
    finally:
        hook.remove()
        smol.share_prefix = saved
    assert once == plain == [smol.generate([p], params)[0].text for p in prompts]
    assert all(once)
    assert run_plain - run_once == (len(prompts) - 1) * shared


def test_a_model_whose_cache_cannot_be_copied_runs_every_prompt_whole(smol, monkeypatch):
    """Where the model's KV cache has no `batch_repeat_interleave` (not one of transformers'
    Cache classes), the batch runs without the shared prefix instead of failing."""
    from transformers import DynamicCache

    prompts = [FRANCE, [{"role": "user", "content": "Name a primary colour."}]]
    params = GenParams(max_tokens=8)
    want = [g.text for g in smol.generate(prompts, params)]
    owner = next(c for c in DynamicCache.__mro__ if "batch_repeat_interleave" in vars(c))
    monkeypatch.delattr(owner, "batch_repeat_interleave")
    ids = [smol._ids(p) for p in prompts]
    width = max(map(len, ids))
    assert len(ids[0]) != len(ids[1])
    inputs = smol._inputs(ids)
    assert "past_key_values" not in inputs  # plain left padding
    assert inputs["attention_mask"].tolist() == [[0] * (width - len(i)) + [1] * len(i)
                                                 for i in ids]
    assert [g.text for g in smol.generate(prompts, params)] == want
