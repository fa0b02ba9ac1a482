"""`python -m llm_ladder.cli`: the `ladder` command."""

from llm_ladder.cli import main

main()
