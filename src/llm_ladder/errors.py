"""User-facing errors: the CLI prints their message without a traceback; `redact_url`, the
one function that takes secrets out of URLs before they reach a message, a log, a document id
or the run store."""

import re
from typing import Any

# query parameters whose value is a credential (matched case-insensitively, also as a suffix
# such as `x-amz-signature` or `my_api_key`)
SECRET_PARAMS = ("password", "passwd", "pwd", "pass", "token", "secret", "key", "apikey",
                 "api-key", "sig", "signature", "auth", "authorization", "credential",
                 "credentials", "session", "sas", "code")
_USERINFO = re.compile(r"(://[^\s/?#@:]*):[^\s/?#]*@")  # to the last @: p@ss
_QUERY = re.compile(r"([?&;]|\bpassword=)([^\s=&;#?]*)=?([^\s&;#'\"]*)")
_LIBPQ_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.I)


def _secret_name(name: str) -> bool:
    n = name.lower()
    return any(n == p or n.endswith(("_" + p, "-" + p, "." + p)) or p in ("token", "secret",
               "password") and p in n for p in SECRET_PARAMS)


def redact_url(text: str) -> str:
    """`text` with every URL's password (`user:password@`) and credential-bearing query values
    (`?token=`, `&api_key=`, `X-Amz-Signature=`, a libpq `password=...`) replaced by `***`.
    Works on a bare URL or on a message that contains URLs; everything else is unchanged."""
    text = _USERINFO.sub(r"\1:***@", text)
    text = _LIBPQ_PASSWORD.sub(lambda m: m.group(1) + "***", text)

    def query(m: re.Match) -> str:
        sep, name, value = m.groups()
        if sep.lower().startswith("password") or not value or not _secret_name(name):
            return m.group(0)
        return f"{sep}{name}=***"

    return _QUERY.sub(query, text)


def redact_urls_in(value: Any) -> Any:
    """`redact_url` applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list):
        return [redact_urls_in(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_urls_in(v) for k, v in value.items()}
    return value


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
