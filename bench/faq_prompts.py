"""The shared benchmark workload: construction-FAQ questions (CC BY 4.0) as chat requests."""

import json
from pathlib import Path

FAQ = Path(__file__).resolve().parents[1] / "examples/construction-faq/data/faq.jsonl"


def faq_prompts(n: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(x) for x in FAQ.read_text(encoding="utf-8").splitlines()[:n]]
    return [[{"role": "user", "content": r["input"]}] for r in rows]
