"""A real base-model upgrade that re-tunes: `ladder upgrade --from default --to gemma-local`.

A tiny task (product -> opaque queue code, 3 products; the rows of
test_known_answer_finetune) climbs only the `lora` rung on SmolLM2-135M (backend local), then
`ladder upgrade` re-tunes the same recipe on Gemma 3 270M loaded by transformers from its GGUF
(`name = "gemma3-270m"`, backend local; models/local.resolve_weights). The adapter it trains
must be a new one, recorded with Gemma's base fingerprint, and the one-screen answer must
carry the verdict and the paired fixed/broken counts. Training is kept tiny (1 epoch, batch
4, max_seq_len 64): the test checks the route, not the adapter's quality.

Cost: the re-tune test took 360 s on 2 cores at load average ~15 (shared), the template test
44 s; the first run on a machine also converts the Gemma GGUF to float safetensors in the
llm-ladder cache (387 s here, once, shared with every later load).
"""

from __future__ import annotations

import json
import re

import pytest
from helpers import ladder
from test_known_answer_finetune import rows

from llm_ladder.finetune import registry
from llm_ladder.models.local import resolve_weights

TASK = """
name = "upgrade-retune"
description = "Route the support ticket to its product queue."
bar = 0.6
[data]
examples = ["data/tickets.jsonl"]
[split]
train = 0.75
dev = 0.0
test = 0.25
seed = 3
max_test = 4
[metric]
name = "accuracy"
[generation]
max_tokens = 4
[rungs]
include = ["lora"]
[finetune]
epochs = 1
batch_size = 4
learning_rate = 0.002
r = 4
alpha = 8
max_seq_len = 64
eval_every = 1000
save_every = 1000
min_examples = 4
[models.default]
backend = "local"
name = "smollm2-135m"
batch_size = 8
threads = 1
[models.gemma-local]
backend = "local"
name = "gemma3-270m"
batch_size = 8
threads = 1
"""


@pytest.mark.slow
def test_upgrade_re_tunes_the_lora_rung_on_gemma(tmp_path):
    root = tmp_path / "routes"
    (root / "data").mkdir(parents=True)
    small = [r for r in rows() if r["output"] in ("Q1", "Q2", "Q3")][:24]
    (root / "data" / "tickets.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in small), encoding="utf-8")
    (root / "task.toml").write_text(TASK, encoding="utf-8")
    ladder("run", root, "--model", "default", "--rungs", "lora", "--all", "--no-report",
           timeout=600)
    adapters = root / ".ladder" / "adapters"
    before = {p.name for p in adapters.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert len(before) == 1

    proc = ladder("upgrade", root, "--from", "default", "--to", "gemma-local", timeout=900)
    out = proc.stdout
    after = {p.name for p in adapters.iterdir() if p.is_dir() and not p.name.startswith(".")}
    new = after - before
    assert len(new) == 1, (before, after)  # a new adapter; the old one is kept
    manifest = json.loads((adapters / new.pop() / "manifest.json").read_text())
    gemma = registry.base_fingerprint(resolve_weights("gemma3-270m", None))
    smol = registry.base_fingerprint(resolve_weights("smollm2-135m", None))
    assert manifest["base"]["fingerprint"] == gemma != smol, manifest["base"]
    assert manifest["base"]["key"] == "gemma-local", manifest["base"]
    # the one-screen answer: the verdict and the paired counts of the re-tuned rung
    assert re.search(r"(Changed|Unchanged):", out), out
    assert "lora" in out and "gemma-local" in out, out
    assert re.search(r"fixed", out) and re.search(r"broken", out), out


def test_gemma_local_tokenizer_has_the_transcript_template():
    """The converted Gemma base model gets the llama.cpp backend's plain transcript as its chat
    template, with the answer closed by <eos>: what LoRA learns to stop on (tokenizer only)."""
    from transformers import AutoTokenizer

    from llm_ladder.finetune.data import IGNORE, encode

    tok = AutoTokenizer.from_pretrained(resolve_weights("gemma3-270m", None))
    msgs = [{"role": "system", "content": "Answer with the capital city."},
            {"role": "user", "content": "France"}, {"role": "assistant", "content": "Paris"},
            {"role": "user", "content": "Spain"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == ("<bos>Answer with the capital city.\n\nUser: France\nAssistant: Paris<eos>\n"
                    "User: Spain\nAssistant:")
    ids, labels = encode(tok, msgs, "Madrid")
    assert tok.convert_ids_to_tokens([i for i, lab in zip(ids, labels, strict=True)
                                      if lab != IGNORE]) == ["▁Madrid", "<eos>"]


def test_untuned_gemma_local_stops_at_the_next_user_turn():
    """Prompted without an adapter, the base model would write the next "User:" turn until
    max_tokens: the local backend adds the transcript's turn marker as a stop string, in
    batch generation and in streaming alike (the llama.cpp backend does the same)."""
    from llm_ladder.models.base import GenParams
    from llm_ladder.models.local import TransformersModel

    model = TransformersModel("gemma3-270m", batch_size=2)
    shots = [("France", "Paris"), ("Germany", "Berlin"), ("Egypt", "Cairo")]
    msgs = [{"role": "system", "content": "Answer with the capital city."}]
    for country, city in shots:
        msgs += [{"role": "user", "content": country}, {"role": "assistant", "content": city}]
    msgs.append({"role": "user", "content": "Spain"})
    params = GenParams(max_tokens=24)
    (gen,) = model.generate([msgs], params)
    assert "Madrid" in gen.text and "User" not in gen.text, gen
    assert gen.finish_reason == "stop" and gen.tokens_out < 24, gen
    streamed = list(model.stream(msgs, params))
    assert "".join(s for s in streamed if isinstance(s, str)) == streamed[-1].text == gen.text
    assert params.stop is None  # the caller's settings are not changed
