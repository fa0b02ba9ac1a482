"""Tool-calling mechanics: schemas (`schemas`), the prompted JSON protocol (`calls`), the
executor (`executor`), the loop (`loop`) and the `tool_call` metric (`metric`).

This package never imports a rung: the tool-use rungs (`llm_ladder.rungs.tools`) build on it.
"""
