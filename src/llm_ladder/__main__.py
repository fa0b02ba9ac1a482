"""`python -m llm_ladder`: the `ladder` command."""

from llm_ladder.cli import main

main()
