"""What every `ladder` command shares: the Typer app, the consoles, the options, progress
bars and table/format helpers.

Human output goes to Rich consoles; with `--json` stdout carries exactly one JSON document
and everything else goes to stderr. Command modules import this module and the library,
never each other.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from llm_ladder.ladder import planned_cells, power
from llm_ladder.serving.latency import served
from llm_ladder.session import Session, open_task
from llm_ladder.store import Store
from llm_ladder.task import Task

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Climb the ladder: prompt, retrieve or fine-tune, decided on your data.")
err = Console(stderr=True, soft_wrap=True)
out = Console(width=None if sys.stdout.isatty() else 160)

TaskDir = Annotated[Path, typer.Argument(help="folder with task.toml")]
TaskOpt = Annotated[Path, typer.Option("--task", help="task folder")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
SkipOpt = Annotated[bool, typer.Option("--skip-bad-rows",
                                       help="run on the good rows when some are bad")]
ResumeOpt = Annotated[bool, typer.Option("--resume",
                                         help="continue the last unfinished run of each rung")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="show third-party progress bars, "
                                          "warnings and log messages")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="model key from task.toml")]


# third-party loggers silenced at default verbosity (their warnings, tokenizer messages)
NOISY_LOGGERS = ("transformers", "sentence_transformers", "huggingface_hub", "peft",
                 "accelerate", "torch", "datasets", "lancedb", "httpx")


def quiet_libraries(verbose: bool = False) -> None:
    """Silence third-party noise unless `verbose`: transformers/huggingface_hub progress bars
    ("Loading weights", "Writing model shards"), Python warnings (FutureWarning, ...) and
    library log messages below ERROR. Our own Rich progress bars are untouched. Works before
    and after the libraries are imported (environment and live switches both)."""
    if verbose:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.simplefilter("ignore")  # our own code reports through Rich, never `warnings`
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        tf_logging = sys.modules["transformers"].utils.logging
        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()


def task_store(task_dir: Path) -> tuple[Task, Store]:
    """The task in `task_dir` and its run store."""
    return open_task(task_dir)


def esc(text: str) -> str:
    """Text with Rich markup escaped: user data never becomes markup."""
    return escape(text)


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err, transient=False)


def progress_callback(bar: Progress):
    """A `climb`/`run_rung` progress callback that adds one bar per rung."""
    def progress(total: int, label: str):
        tid = bar.add_task(label, total=total)
        return lambda n: bar.advance(tid, n)

    return progress


def print_session(s: Session, models: list[str] | None = None) -> None:
    """What the data looks like before any rung runs (stderr); `models` of a multi-model
    climb make the power line count its cells."""
    prep, task, sp = s.prep, s.task, s.prep.splits
    err.print(f"[bold]{esc(task.name)}[/]: {prep.rows_read} rows read, {len(prep.problems)} bad"
              f"{' (skipped)' if prep.problems else ''}; split train {len(sp.train)} / dev "
              f"{len(sp.dev)} / test {len(sp.test)}"
              + (f" (+ {sp.capped_test} held back for `ladder confirm`)" if sp.capped_test
                 else ""))
    if sp.leakage and sp.leakage.leaks:
        c = sp.leakage.counts()
        err.print(f"[yellow]leakage:[/] {sum(c.values())} train/dev example(s) overlap the test "
                  f"split ({', '.join(f'{k} {v}' for k, v in c.items())}); removed from train "
                  f"{sp.leakage.removed_train} and dev {sp.leakage.removed_dev}")
    ts = prep.token_spread
    if ts:
        err.print(f"input tokens ({esc(s.model_key)}'s tokenizer, chat template included): min "
                  f"{ts['min']}, median {ts['median']}, p95 {ts['p95']}, max {ts['max']} "
                  f"(limit {ts['limit']})")
    if s.too_long:
        err.print(f"[yellow]{len(s.too_long)} input(s) longer than the context skipped[/]")
    if s.task.bar is not None and s.rungs:
        planned = planned_cells(s.task, s.rungs, models or [s.model_key])
        err.print("power: " + esc(power(s.prep, planned)["sentence"]), highlight=False)


def summary_table(summaries: list[dict[str, Any]], title: str) -> Table:
    """The ladder table: one row per rung summary."""
    t = Table(title=esc(title))
    one_time = any(s.get("one_time") for s in summaries)
    # served: per request as `ladder serve` answers at the serving concurrency (the budget's
    # figure); batch: the evaluation's batches, a throughput figure (serving/latency.py)
    for col in ("rung", "quality [95% CI]", "n", "unscored", "tok in", "tok out",
                "served p50 ms", "served p95 ms", "batch p95 ms", "$/1k req") + (
                    ("one-time",) if one_time else ()):
        t.add_column(col, justify="left" if col in ("rung", "one-time") else "right")
    for s in summaries:
        q = s["quality"]
        qtxt = "—" if q["value"] is None else f"{q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"
        extra = []
        if one_time:
            o = s.get("one_time") or {}
            extra = [f"{o['seconds']:.0f} s {o.get('what', '')}" if o.get("seconds") is not None
                     else "—"]
        p50, p95 = served(s).get("p50_s"), served(s).get("p95_s")
        batch = s.get("latency_p95_s")
        t.add_row(esc(s["rung"]), qtxt, str(s["n"]), str(s.get("unscored", 0)),
                  fmt(s.get("tokens_in_mean"), ".0f"), fmt(s.get("tokens_out_mean"), ".1f"),
                  fmt(p50 and p50 * 1000, ".0f"), fmt(p95 and p95 * 1000, ".0f"),
                  fmt(batch and batch * 1000, ".0f"),
                  fmt(s.get("cost_per_1k_usd"), ".4f"), *map(esc, extra))
    return t


def rung_line(s: dict[str, Any]) -> str:
    """One rung's summary as one plain line (a log shows the rows as they come)."""
    q = s["quality"]
    qtxt = "—" if q["value"] is None else f"{q['value']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"
    p95, batch = served(s).get("p95_s"), s.get("latency_p95_s")
    return (f"{s['rung']}: {s.get('metric') or 'quality'} {qtxt}, n {s['n']}, unscored "
            f"{s['unscored']}, tok in {fmt(s.get('tokens_in_mean'), '.0f')}, served p95 "
            f"{fmt(p95 and p95 * 1000, '.0f')} ms, batch p95 {fmt(batch and batch * 1000, '.0f')}"
            f" ms, $/1k {fmt(s.get('cost_per_1k_usd'), '.4f')}")


def train_events(bar: Progress, loss_in_label: bool = False):
    """An on_event callback that drives a training progress bar and prints notices.

    With `loss_in_label` (a plain bar, as `ladder run` shows) the loss goes in the label."""
    state: dict[str, Any] = {}

    def on_event(ev: dict[str, Any]) -> None:
        if "warning" in ev:
            err.print(f"[yellow]data check:[/] {esc(ev['warning'])}", highlight=False)
        elif "waiting" in ev:
            err.print(f"[yellow]waiting:[/] {esc(ev['waiting'])}", highlight=False)
        elif "calibrated" in ev:  # a multi-model climb: expected $ per 1k requests per cell
            err.print("expected cost per 1k requests (calibration on dev): " + ", ".join(
                f"{esc(k)} {'unknown' if v is None else f'${v:.4f}'}"
                for k, v in ev["calibrated"].items()), highlight=False)
        elif "reused" in ev:
            what = "full model" if ev.get("method") == "full" else "adapter"
            err.print(f"{what} {ev['reused']} already trained on this data, base and config; "
                      "reusing it")
        elif "resumed" in ev:
            err.print(f"resuming from step {ev['resumed']} ({esc(str(ev['checkpoint']))})")
        elif "reused_prompt" in ev:
            err.print(f"optimized prompt {ev['reused_prompt']} already searched with this data, "
                      "seed, budget and model; reusing it")
        elif "search_start" in ev:
            state.pop("sid", None)
            err.print(f"searching prompts on train {ev['train']} / dev {ev['dev']} (budget "
                      f"{ev['budget']} model calls; the test split is not used)")
        elif "search_calls" in ev:  # prompt search: calls spent, best dev score so far
            best = "—" if ev.get("best_dev") is None else f"{ev['best_dev']:.3f}"
            if "sid" not in state:
                state["sid"] = bar.add_task("prompt search", total=ev["budget"])
            bar.update(state["sid"], completed=ev["search_calls"],
                       description=f"search dev {best}")
            if not err.is_terminal and ev.get("done"):
                err.print(f"prompt search: {ev['search_calls']}/{ev['budget']} calls, best dev "
                          f"{best}", highlight=False)
        elif "start" in ev:
            state.pop("tid", None)  # a new training gets a bar of its own
            what = "model" if ev["start"] == "full" else "adapter"  # full: every weight
            err.print(f"training {ev['start']} {what} {ev['adapter']} on {ev['train']} train "
                      f"examples (dev {ev['dev']})")
        elif "step" in ev:
            if "tid" not in state:
                state["tid"] = bar.add_task("training", total=ev["total"], loss=0.0, tps=0.0,
                                            dev="")
            dev = f" dev {ev['dev_loss']:.3f}" if "dev_loss" in ev else ""
            if not err.is_terminal and (dev or ev["step"] == ev["total"]):
                # no live bar in a log file: one line at every dev check instead
                err.print(f"step {ev['step']}/{ev['total']} loss {ev['loss']:.3f}{dev} "
                          f"{ev['tokens_per_s']:.0f} tok/s", highlight=False)
            bar.update(state["tid"], completed=ev["step"], total=ev["total"], loss=ev["loss"],
                       tps=ev["tokens_per_s"], dev=dev or bar.tasks[state["tid"]].fields["dev"])
            if loss_in_label:
                bar.update(state["tid"], description=f"training {ev['loss']:.3f}")

    return on_event
