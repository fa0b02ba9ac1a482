"""The `ladder` command. Each command module registers on the one Typer app in
`cli.common`; `main` runs it, printing a user mistake (LadderError) as one clear message
with exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click
import typer

from llm_ladder.cli.common import VerboseOpt, app, err, esc, quiet_libraries
from llm_ladder.errors import LadderError

__all__ = ["app", "main"]



@app.callback()
def _global_options(verbose: VerboseOpt = False) -> None:
    """Climb the ladder: prompt, retrieve or fine-tune, decided on your data."""
    quiet_libraries(verbose)


# Importing a command module registers its commands on `app`; `ladder --help` lists them in
# this order.
COMMAND_MODULES = ("run", "runs", "confirm", "finetune", "report", "serve", "init",
                   "judge", "prompts", "synth", "upgrade")
for _name in COMMAND_MODULES:
    importlib.import_module(f"llm_ladder.cli.{_name}")


def main() -> None:
    """The `ladder` entry point."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("LANCE_LOG", "error")
    try:
        # Typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns the code
        code = app(standalone_mode=False)
    except LadderError as e:
        err.print(f"[red]error:[/] {esc(str(e))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; what was stored is kept — continue with --resume")
        sys.exit(130)
    except typer.Abort:
        sys.exit(130)
    except click.ClickException as e:  # usage errors
        e.show()
        sys.exit(e.exit_code)
    if code == 130:
        err.print("interrupted; what was stored is kept — continue with --resume")
    if isinstance(code, int) and code:
        sys.exit(code)
