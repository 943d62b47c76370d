"""The HTTP client every CI-side command shares: auth, retries with backoff, clear errors,
and a bound on waiting.

Retries cover what is worth retrying from CI (429, 5xx, connection failures), honour
``Retry-After``, and stop after a bounded number of tries. Waiting is bounded twice over, so
that a server which accepts connections but never answers cannot hold a build: each try has
a connect timeout of a few seconds and a read timeout, and every call of one CI step shares a
:class:`Budget`, a deadline that cuts tries, timeouts and backoff sleeps short. A
``Retry-After`` longer than the budget left ends the call at once with the server's own
error (a 429 says it is rate-limited), rather than a sleep that ends in a bare timeout.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection: a reachable server answers a SYN in milliseconds."""


class Budget:
    """Seconds a CI step may spend waiting for the server, over all its calls.

    Only time spent in calls counts, not the time in between: a pytest run's budget covers
    asking for the plan before the tests and uploading after them, however long they ran.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._spent = 0.0

    def remaining(self, since: float | None = None) -> float:
        """Seconds left, counting the call in progress since ``since`` (a clock reading)."""
        current = self.clock() - since if since is not None else 0.0
        return max(0.0, self.seconds - self._spent - current)

    def spend(self, seconds: float) -> None:
        self._spent += seconds


class BudgetExhausted(httpx.TimeoutException):
    """The step's time budget ran out before the server answered."""


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


def _server_error(response: httpx.Response, note: str = "") -> ServerError:
    """The server's refusal; ``note`` adds why the client did not try again."""
    try:
        body = response.json()
        code, message = body.get("code", ""), body.get("message", "")
    except ValueError:
        code, message = "", response.text[:500]
    return ServerError(response.status_code, code, f"{message} ({note})" if note else message)


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
        budget: Budget | None = None,
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
        self.timeout = timeout
        self.budget = budget
        self._sleep = sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with retries; return a 2xx response or raise ServerError / httpx.HTTPError
        (:class:`BudgetExhausted` once the budget is spent).

        ``kwargs`` may hold a ``content_factory`` that builds a fresh body for every try
        (a streamed upload cannot be replayed).
        """
        if self.budget is None:
            return self._request(None, method, path, kwargs)
        started = self.budget.clock()
        try:
            return self._request(started, method, path, kwargs)
        finally:
            self.budget.spend(self.budget.clock() - started)

    def _request(
        self, started: float | None, method: str, path: str, kwargs: dict[str, Any]
    ) -> httpx.Response:
        factory = kwargs.pop("content_factory", None)
        for attempt in range(1, self.attempts + 1):
            if factory is not None:
                kwargs.update(factory())
            try:
                timeout = self._timeout(started)
                response = self._http.request(method, path, timeout=timeout, **kwargs)
            except httpx.TransportError:
                if attempt == self.attempts or self._left(started) <= 0:
                    raise
                self._pause(started, self._delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.attempts:
                retry_after, left = retry_after_seconds(response), self._left(started)
                if retry_after is not None and retry_after > left:
                    # Sleeping out the budget would only end in a timeout that hides why.
                    raise _server_error(
                        response,
                        f"it asks to retry after {retry_after:g} s, more than the "
                        f"{left:.0f} s left of this step's time budget",
                    )
                if left > 0:
                    self._pause(started, self._delay(attempt, retry_after))
                    continue
            if response.is_success:
                return response
            raise _server_error(response)
        raise AssertionError("unreachable: the loop returns or raises")

    def _left(self, started: float | None) -> float:
        return float("inf") if self.budget is None else self.budget.remaining(started)

    def _timeout(self, started: float | None) -> httpx.Timeout:
        """This try's timeouts: the client's, cut to what is left of the budget."""
        left = self._left(started)
        if left <= 0:
            assert self.budget is not None
            raise BudgetExhausted(f"gave up after the time budget of {self.budget.seconds:g} s")
        read = min(self.timeout, left)
        return httpx.Timeout(read, connect=min(CONNECT_TIMEOUT, read))

    def _pause(self, started: float | None, seconds: float) -> None:
        self._sleep(min(seconds, self._left(started)))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        exponential = self.backoff * 2 ** (attempt - 1)
        return min(self.max_delay, exponential * (0.5 + random.random() / 2))
