"""Keep credentials out of the access log.

uvicorn logs every request line, query string included, and presigned URLs carry a valid
signature there (anyone who reads the log could replay it until it expires). A filter on
``uvicorn.access`` replaces the values of credential-like parameters with ``***`` before
the line is written. The API never takes an API key in the URL (:data:`KEY_PARAMETERS`
are refused by :func:`testlens.server.auth.require`), so a key pasted there is refused and
not logged either.
"""

from __future__ import annotations

import logging
import re

KEY_PARAMETERS = ("api_key", "apikey", "access_token", "token")
"""Query parameters that carry an API key in other tools' dialects: refused here."""
_SECRET_PARAMETERS = ("signature", "sig", "secret", "password", *KEY_PARAMETERS)
_SECRET = re.compile(r"([?&](?:" + "|".join(_SECRET_PARAMETERS) + r")=)[^&#\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` (a path with its query) with every secret parameter's value masked."""
    return _SECRET.sub(r"\1***", text)


class RedactQueries(logging.Filter):
    """Masks secrets in uvicorn's access-log records (their request path argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install() -> None:
    """Add the filter to uvicorn's access logger, once per process."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueries) for f in access.filters):
        access.addFilter(RedactQueries())
