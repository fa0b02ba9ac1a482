"""RAG building blocks: load a corpus, chunk it, store vectors, retrieve, and score retrieval.

Each module is usable on its own; none of them calls a chat model. The `rag` extra installs
what they need (pypdf, lancedb, bm25s). Skipped here: the RAG rung and the CLI commands.
"""
