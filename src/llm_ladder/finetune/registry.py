"""Trained adapters, named by content: the same base + data + recipe is never trained twice.

An adapter lives in `TASK/.ladder/adapters/<id>/` as a PEFT folder (adapter_config.json,
adapter_model.safetensors), the tokenizer with its chat template, `training.json` (the loss
curve and speed) and `manifest.json` (base model, data hash, config, metrics, size). The id
is a hash of the rung, the base weights' fingerprint, the tokenized train and dev data and
the training config, so a folder that exists is exactly the adapter that would be trained.
Only complete folders carry an id name (they are renamed into place when finished).
`export_adapter` writes a folder vLLM loads with `--lora-modules`, optionally with a merged
model beside it. `training_lock` lets one process at a time train a given id: the checkpoint
folder `.work-<id>` is shared by name, so a second trainer would otherwise discard the first
one's checkpoints under it. Deliberately skipped: garbage collection of old adapters, locking
on platforms without `fcntl`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError, require

RECIPE_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "vocab.json", "merges.txt")


def adapters_dir(task: Any) -> Path:
    return task.state_dir / "adapters"


@contextmanager
def training_lock(root: Path, aid: str,
                  on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the exclusive right to train adapter `aid` under `root`.

    Another process training the same id makes this wait (after telling `on_wait` its pid)
    until that one finishes or dies: the kernel drops a dead process's lock, so a killed
    trainer never leaves a stale one. The caller re-reads the manifest afterwards, so the
    waiter reuses what the first one trained instead of training it again.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / f".lock-{aid}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def base_fingerprint(folder: Path) -> str:
    """Name and size of the base weights: a cheap, stable stand-in for hashing 500 MB."""
    weights = sorted(folder.glob("*.safetensors"))
    blob = json.dumps([folder.name] + [[w.name, w.stat().st_size] for w in weights])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def adapter_id(rung: str, base: str, train_hash: str, dev_hash: str,
               config: dict[str, Any]) -> str:
    blob = json.dumps({"rung": rung, "base": base, "train": train_hash, "dev": dev_hash,
                       "config": config, "recipe": RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def finish(tmp: Path, final: Path, manifest: dict[str, Any], tokenizer_dir: Path) -> None:
    """Add tokenizer and manifest to a trained adapter folder, then rename it into place."""
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, tmp / name)
    manifest = {**manifest, "created": time.time()}
    manifest["size_bytes"] = folder_size(tmp)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    fsync_tree(tmp)
    try:
        # rename(2) onto an existing non-empty folder fails: no exists-then-rename gap
        tmp.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # trained concurrently: same content, keep it
        return
    fsync_dir(final.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in folder `path` durable (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then the folders: its content is on disk before it is
    renamed into place, so a power loss cannot leave a complete-looking, empty folder."""
    for p in sorted(folder.rglob("*"), reverse=True):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(folder)


def read_manifest(path: Path) -> dict[str, Any] | None:
    f = path / "manifest.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text(encoding="utf-8"))


def list_adapters(root: Path) -> list[dict[str, Any]]:
    """Complete adapters, newest first (temporary and work folders are ignored)."""
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith(".") and ".tmp" not in d.name:
            m = read_manifest(d)
            if m is not None:
                out.append({**m, "path": str(d)})
    return sorted(out, key=lambda m: -m.get("created", 0))


def resolve(root: Path, ref: str) -> Path:
    """An adapter folder from its id or a unique id prefix."""
    hits = [m for m in list_adapters(root) if m["id"].startswith(ref)]
    if len(hits) == 1:
        return Path(hits[0]["path"])
    known = ", ".join(m["id"] for m in list_adapters(root)) or "none"
    if not hits:
        raise LadderError(f"no adapter {ref!r} in {root}; known: {known}")
    raise LadderError(f"adapter prefix {ref!r} is ambiguous; known: {known}")


def record_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Add test-split results to an adapter's manifest (written atomically)."""
    m = read_manifest(path) or {}
    m.setdefault("metrics", {}).update(metrics)
    tmp = path / "manifest.json.tmp"
    tmp.write_text(json.dumps(m, indent=2), encoding="utf-8")
    tmp.replace(path / "manifest.json")


def export_adapter(root: Path, ref: str, dest: Path, merge: bool = False) -> Path:
    """Copy an adapter to `dest` as a PEFT folder (vLLM: `--lora-modules name=dest`).

    With `merge`, also write `dest/merged/`: the base model with the adapter folded in, as
    safetensors, for servers without LoRA support. A full fine-tune is a whole model folder
    already (`vllm serve dest`): it is copied as it is and `merge` is refused, not ignored.
    """
    src = resolve(root, ref)
    manifest = read_manifest(src) or {}
    if merge and manifest.get("method") == "full":
        raise LadderError(f"{src.name} is a full fine-tune: the exported folder is already the "
                          "whole model (serve it as a model, not as an adapter); drop --merge")
    if dest.exists() and any(dest.iterdir()):
        raise LadderError(f"{dest}: folder exists and is not empty")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.tmp"))
    if merge:
        transformers = require("transformers", "local")
        peft = require("peft", "finetune")
        base = Path(manifest["base"]["weights"])
        model = transformers.AutoModelForCausalLM.from_pretrained(base, use_safetensors=True)
        model = peft.PeftModel.from_pretrained(model, src).merge_and_unload()
        model.save_pretrained(tmp / "merged", safe_serialization=True)
        transformers.AutoTokenizer.from_pretrained(src).save_pretrained(tmp / "merged")
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    return dest
