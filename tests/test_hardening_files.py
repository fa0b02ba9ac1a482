"""Files written for others to read: the adapter registry under concurrent trainers, the
deploy bundle with a tampered run store, and the report (written atomically)."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

import pytest

from llm_ladder.errors import LadderError
from llm_ladder.finetune.registry import finish, read_manifest

ROUNDS = 5


def _finish(root: str, n: int, barrier, errors) -> None:
    try:
        tmp = Path(root) / f"abc123.tmp{n}"
        tmp.mkdir()
        (tmp / "adapter_model.safetensors").write_bytes(b"x" * 1000)
        barrier.wait(30)
        finish(tmp, Path(root) / "abc123", {"trainer": n}, Path(root) / "no-tokenizer")
    except Exception:
        errors.put(traceback.format_exc().strip().splitlines()[-1])


def test_concurrent_trainers_finishing_one_adapter(tmp_path: Path) -> None:
    """Trainers of the same content-addressed adapter finish together: one folder wins, the
    others are discarded; none fails (the old exists-then-rename raised ENOTEMPTY)."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for round_ in range(ROUNDS):
        root = tmp_path / f"r{round_}"
        root.mkdir()
        barrier = ctx.Barrier(8)
        procs = [ctx.Process(target=_finish, args=(str(root), n, barrier, errors))
                 for n in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.name for p in root.iterdir()] == ["abc123"]
        assert read_manifest(root / "abc123")["trainer"] in range(8)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []


def test_a_trainer_finishing_in_the_gap_before_our_rename(tmp_path: Path, monkeypatch) -> None:
    """The interleaving the 8-process test can only hit by luck, forced: another trainer's
    folder appears after any existence check of ours and before our rename. The old
    exists-then-rename raised ENOTEMPTY here; finish must keep the other folder and drop ours."""
    final = tmp_path / "abc123"
    tmp = tmp_path / "abc123.tmp1"
    tmp.mkdir()
    (tmp / "adapter_model.safetensors").write_bytes(b"ours")
    real_exists = Path.exists

    def other_finishes_now(self: Path, *a, **k) -> bool:
        if self == final and not real_exists(final):
            final.mkdir()  # the other trainer renames its folder into place right now
            (final / "manifest.json").write_text('{"trainer": "other"}')
            return False  # ... after our check saw nothing
        return real_exists(self, *a, **k)

    monkeypatch.setattr(Path, "exists", other_finishes_now)
    real_rename = Path.rename

    def rename_after_the_other(self: Path, target):
        other_finishes_now(Path(target))  # whether or not we checked first, it wins the race
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_after_the_other)
    finish(tmp, final, {"trainer": "us"}, tmp_path / "no-tokenizer")
    assert read_manifest(final) == {"trainer": "other"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abc123"]


@pytest.mark.parametrize("bad", ["../../../../outside", "/etc", "abc/../../x", "", "..",
                                 "ABC123"])
def test_deploy_refuses_an_adapter_id_that_is_a_path(tmp_path: Path, bad: str) -> None:
    from llm_ladder.serving.deploy import write_bundle
    from llm_ladder.store import Store
    from llm_ladder.task import load_task
    from llm_ladder.testing import write_task

    rows = [{"id": f"r{i}", "input": f"q{i}", "output": "yes"} for i in range(4)]
    task = load_task(write_task(tmp_path / "t", rows, answers=["yes"]))
    store = Store(task.state_dir / "runs.db")
    run = store.create_run(task.name, "lora", "default", "test",
                           {"settings": {"adapter": bad}}, {})
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(LadderError, match="is not an adapter id"):
        write_bundle(task, store, run, tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written anywhere


def test_a_failed_report_write_leaves_the_previous_report(tmp_path: Path, monkeypatch) -> None:
    """Both pages are rendered before either is written, and each is renamed into place: a
    failure while rendering the Markdown leaves the previous report.html as it was (the old
    code had already overwritten it), and no temporary file stays behind."""
    from test_decide import answers, make_task, store_run

    import llm_ladder.report as report
    from llm_ladder.store import Store
    from llm_ladder.task import load_task

    task = load_task(make_task(tmp_path / "t"))
    store = Store(task.state_dir / "runs.db")
    store_run(store, task, "zero-shot", answers(30, set(range(20))), latency=0.05)
    html_path, md_path = report.write_report(task, store, "L1", tmp_path / "out")
    assert "<html" in html_path.read_text().lower() and md_path.read_text()
    html_path.write_text("the previous report", encoding="utf-8")

    def broken(data):
        raise RuntimeError("disk full while rendering")

    monkeypatch.setattr(report, "render_markdown", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        report.write_report(task, store, "L1", tmp_path / "out")
    assert html_path.read_text() == "the previous report"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html",
                                                                      "report.md"]


def _tune_once(task_dir: str, n: int, started, waiting, errors, events) -> None:
    """One `ladder run` process tuning `lora`: the trainer is replaced by one that writes a
    checkpoint into the shared work folder, waits, and needs that checkpoint back intact."""
    import time as _time

    import llm_ladder.rungs.finetune as ft
    from llm_ladder.rungs.base import get_rung
    from llm_ladder.session import prepare
    from llm_ladder.task import load_task

    def fake_train(folder, cfg, rows, dev, pad, work, out, resume=False, on_step=None,
                   **_):
        if work.exists():  # what the real trainer does with a folder it did not resume
            import shutil as _shutil
            _shutil.rmtree(work)
        work.mkdir(parents=True)
        (work / f"ckpt-{n}").write_text("weights")
        started.set()
        deadline = _time.monotonic() + 60  # train until the other process waits for us
        while not waiting.is_set() and _time.monotonic() < deadline:
            if not (work / f"ckpt-{n}").is_file():
                raise AssertionError("our checkpoint was deleted under us")
            _time.sleep(0.05)
        if (work / f"ckpt-{n}").read_text() != "weights":
            raise AssertionError("checkpoint changed")
        tmp = out.parent / f"{out.name}.tmp{n}"
        tmp.mkdir()
        (tmp / "adapter_model.safetensors").write_bytes(b"x")
        return type("R", (), {"as_dict": lambda self: {"seconds": 1.0, "device": "cpu"}})(), tmp

    try:
        ft.run_training = fake_train
        prepared = prepare(load_task(Path(task_dir)))
        def on_event(ev):
            events.put((n, ev))
            if "being trained by another process" in ev.get("waiting", ""):
                waiting.set()

        ctx = prepared.context(on_event=on_event)
        rung = get_rung("lora")
        ft.tune(ctx, "lora", get_rung(rung.prompt_rung).build(ctx), ctx.train)
    except Exception:
        errors.put(traceback.format_exc().strip().splitlines()[-1])


def test_two_processes_tuning_the_same_adapter_do_not_share_its_checkpoints(tmp_path: Path):
    """Two processes asked for the same content-addressed adapter: the second waits for the
    first (and is told by whom), then reuses its adapter. Without the lock the second one
    discarded the first one's checkpoint folder while it was training (seen as ENOTEMPTY)."""
    from conftest import write_task

    task = write_task(tmp_path / "t", n_rows=36, extra="[finetune]\nmin_examples = 10\n",
                      max_test=2)
    ctx = multiprocessing.get_context("fork")
    started, waiting = ctx.Event(), ctx.Event()
    errors, events = ctx.Queue(), ctx.Queue()
    first = ctx.Process(target=_tune_once, args=(str(task), 1, started, waiting, errors,
                                                 events))
    first.start()
    assert started.wait(120)
    second = ctx.Process(target=_tune_once, args=(str(task), 2, ctx.Event(), waiting, errors,
                                                  events))
    second.start()
    first.join(120)
    second.join(120)
    failures, seen = [], []
    while not errors.empty():
        failures.append(errors.get())
    while not events.empty():
        seen.append(events.get())
    assert failures == []
    starts = [n for n, ev in seen if "start" in ev]
    assert starts == [1]  # trained once
    assert any(n == 2 and "reused" in ev for n, ev in seen)
    assert any(n == 2 and "being trained by another process" in ev.get("waiting", "")
               for n, ev in seen)
    adapters = task / ".ladder" / "adapters"
    assert [p.name for p in adapters.iterdir() if not p.name.startswith(".")] == [
        next(ev["adapter"] for _, ev in seen if "start" in ev)]
