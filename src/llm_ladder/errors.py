"""User-facing errors: the CLI prints their message without a traceback."""


class LadderError(Exception):
    """A mistake in user input or configuration, with a message that says what to fix."""


class MissingDependency(LadderError):
    """A lazily imported extra is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(
            f"this needs the Python package {module!r}; install it with: "
            f"pip install 'llm-ladder[{extra}]'"
        )


def require(module: str, extra: str):
    """Import `module` or raise MissingDependency naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(module, extra) from None
