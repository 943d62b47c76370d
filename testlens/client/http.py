"""The HTTP client every CI-side command shares: auth, retries with backoff, clear errors.

Retries cover what is worth retrying from CI (429, 5xx, connection failures), honour
``Retry-After``, and stop after a bounded number of tries so a dead server never hangs a build.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ServerError(Exception):
    """The server refused the request; ``message`` is its own explanation."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_error(response: httpx.Response) -> ServerError:
    try:
        body = response.json()
        return ServerError(response.status_code, body.get("code", ""), body.get("message", ""))
    except ValueError:
        return ServerError(response.status_code, "", response.text[:500])


class Client:
    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        max_delay: float = 30.0,
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=server.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.attempts = attempts
        self.backoff = backoff
        self.max_delay = max_delay
        self._sleep = sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with retries; return a 2xx response or raise ServerError / httpx.HTTPError.

        ``kwargs`` may hold a ``content_factory`` that builds a fresh body for every try
        (a streamed upload cannot be replayed).
        """
        factory = kwargs.pop("content_factory", None)
        for attempt in range(1, self.attempts + 1):
            if factory is not None:
                kwargs.update(factory())
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == self.attempts:
                    raise
                self._sleep(self._delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.attempts:
                self._sleep(self._delay(attempt, retry_after_seconds(response)))
                continue
            if response.is_success:
                return response
            raise _server_error(response)
        raise AssertionError("unreachable: the loop returns or raises")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        exponential = self.backoff * 2 ** (attempt - 1)
        return min(self.max_delay, exponential * (0.5 + random.random() / 2))
