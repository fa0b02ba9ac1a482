"""Known-answer tasks: `ladder run` with the real embedded SmolLM2-135M must recommend the rung
we know is right.

(a) Every request must be answered with the word APPROVED. The 135M model ignores that
    instruction in a system prompt (checked: it apologises instead), but copies the pattern
    from a few examples, so the ladder must stop at the first few-shot rung, and with --all
    must keep it because few-shot-nearest is not significantly better.
(b) Questions about invented facts that only a small corpus holds: zero-shot and the system
    prompt cannot know them, RAG can, so RAG must be recommended, significantly better than
    the prompts on the same questions. Answers are sentences and references single words, so
    token F1 stays low even when right: the bar (0.15) sits between the measured rungs.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import ladder_json

# one thread: on a busy 2-core machine two torch threads spin-wait on each other (measured on
# the facts task, 4 agents sharing the cores: 2 min 56 s with 2 threads, 53 s with 1)
MODEL = ('[models.default]\nbackend = "local"\nname = "smollm2-135m"\nbatch_size = 12\n'
         'threads = 1\n')
REQUESTS = ["Please review my expense report for the trip to Oslo.", "Can I take Friday off?",
            "Request to buy a new laptop for the design team.",
            "May I expense a taxi ride of 40 euros?",
            "I would like to order 200 pens for the office.",
            "Approve my conference travel to Berlin please.",
            "Requesting access to the finance database.",
            "Can we hire a contractor for two weeks?", "Please sign off on the new logo.",
            "Can I work from home next Tuesday?", "We need a second monitor for Ana.",
            "Request to renew the cloud subscription."]
SHOTS = ["Can I buy a new chair?", "Request for two days of leave in May.",
         "Please approve my hotel booking in Rome.", "May I attend the Python conference?"]
FACTS = [  # (file, title, fact, question, answer): invented, so only the corpus knows them
    ("zorblat.md", "Zorblat vault", "The access code of the Zorblat vault is 7391.",
     "What is the access code of the Zorblat vault?", "7391"),
    ("quillon.md", "Quillon Harbor", "The mascot of Quillon Harbor is a walrus named Fennick.",
     "What is the name of the walrus mascot of Quillon Harbor?", "Fennick"),
    ("drabble.md", "Drabble Institute", "The Drabble Institute was founded in the year 1687.",
     "In which year was the Drabble Institute founded?", "1687"),
    ("velmora.md", "Velmora", "The capital of the island of Velmora is Tesk.",
     "What is the capital of the island of Velmora?", "Tesk"),
    ("orrin.md", "Orrin beetle", "The Orrin beetle eats only the leaves of the plumwort plant.",
     "Which plant does the Orrin beetle eat?", "plumwort"),
    ("kasp.md", "Kasp river", "The Kasp river is 412 kilometres long.",
     "How many kilometres long is the Kasp river?", "412"),
    ("brindle.md", "Brindle tower", "The Brindle tower was designed by the architect Olra Vinn.",
     "Which architect designed the Brindle tower?", "Olra Vinn"),
    ("mup.md", "Mup festival", "The Mup festival is held every year in the month of October.",
     "In which month is the Mup festival held?", "October"),
]


def jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_a_better_prompt_solves_it(tmp_path):
    root = tmp_path / "approve"
    jsonl(root / "data" / "train.jsonl",
          [{"id": f"s{i}", "input": q, "output": "APPROVED"} for i, q in enumerate(SHOTS)])
    jsonl(root / "data" / "test.jsonl",
          [{"id": f"r{i:02d}", "input": q, "output": "APPROVED"}
           for i, q in enumerate(REQUESTS)])
    (root / "task.toml").write_text(f"""
name = "approve-everything"
description = "Approve every request."
bar = 0.5
[data]
examples = ["data/train.jsonl"]
test = "data/test.jsonl"
[split]
train = 1.0
dev = 0.0
test = 0.0
[metric]
name = "normalized_match"
[generation]
max_tokens = 6
[prompt]
system = "Reply with exactly the word APPROVED."
few_shot_k = 4
[rungs]
include = ["zero-shot", "system-prompt", "few-shot-random", "few-shot-nearest"]
{MODEL}
[serve]
latency_probe = 0  # the served-latency probe: tested in test_latency_served
""")
    doc = ladder_json("run", root)
    q = {r["rung"]: r["quality"] for r in doc["rungs"]}
    assert list(q) == ["zero-shot", "system-prompt", "few-shot-random"]  # stopped there
    assert doc["not_run"] == ["few-shot-nearest"]
    assert q["zero-shot"]["value"] == 0 and q["system-prompt"]["value"] <= 0.25
    # 12 test requests: even 12 of 12 has an exact lower bound of 0.735, so the bar is 0.5
    assert q["few-shot-random"]["value"] >= 0.9 and q["few-shot-random"]["low"] > 0.5
    rec = doc["recommendation"]
    assert rec["meets_bar"] and rec["rung"] == "few-shot-random"
    assert rec["settings"]["k"] == 4
    assert any("not run: few-shot-nearest" in n for n in rec["notes"])
    html = Path(doc["report"]["html"]).read_text()
    assert "few-shot-random" in html and "Reply with exactly the word APPROVED." in html

    both = ladder_json("run", root, "--all", "--rungs", "few-shot-random,few-shot-nearest")
    rec = both["recommendation"]
    assert rec["rung"] == "few-shot-random" and both["not_run"] == []
    comp = next(c for c in rec["comparisons"] if c["b"] == "few-shot-nearest")
    assert comp["test"] == "mcnemar" and not comp["significant"]
    assert any(n.startswith("few-shot-nearest reaches") and "not shown better" in n
               and "McNemar" in n for n in rec["notes"])


def test_facts_only_the_corpus_has_need_rag(tmp_path):
    root = tmp_path / "facts"
    for file, title, fact, _, _ in FACTS:
        (root / "corpus").mkdir(parents=True, exist_ok=True)
        (root / "corpus" / file).write_text(f"# {title}\n\n{fact}\n", encoding="utf-8")
    jsonl(root / "data" / "test.jsonl", [{"id": f"q{i}", "input": q, "output": a,
                                          "meta": {"gold_sources": [f]}}
                                         for i, (f, _, _, q, a) in enumerate(FACTS)])
    jsonl(root / "data" / "train.jsonl", [{"id": "t0", "input": "What colour is a banana?",
                                           "output": "yellow"}])
    (root / "task.toml").write_text(f"""
name = "invented-facts"
description = "Answer the question with the exact name, word or number only."
bar = 0.15
[data]
examples = ["data/train.jsonl"]
test = "data/test.jsonl"
[split]
train = 1.0
dev = 0.0
test = 0.0
[metric]
name = "token_f1"
[generation]
max_tokens = 16
[rungs]
include = ["zero-shot", "system-prompt", "rag"]
[corpus]
paths = ["corpus"]
[retrieval]
k = 2
{MODEL}
[serve]
latency_probe = 0  # the served-latency probe: tested in test_latency_served
""")
    ladder_json("index", root)
    doc = ladder_json("run", root)
    q = {r["rung"]: r["quality"] for r in doc["rungs"]}
    assert q["zero-shot"]["low"] < 0.15 and q["system-prompt"]["low"] < 0.15
    rec = doc["recommendation"]
    assert rec["meets_bar"] and rec["rung"] == "rag", rec["reason"]
    assert doc["rungs"][2]["rag"]["recall_at_k"] == 1.0
    for other in ("zero-shot", "system-prompt"):
        comp = next(c for c in rec["comparisons"] if c["b"] == other)
        assert comp["test"] == "sign-flip permutation" and comp["significant"]
        assert comp["diff"] < 0
    assert "indexing the corpus (8 chunks" in rec["ownership"]["rag"]["one_time_what"]
