"""Runtime settings, read once from ``TESTLENS_*`` environment variables.

Zero configuration gives a working server: an SQLite file in the user's data directory
(:func:`default_data_dir`), the same whichever directory ``testlens serve`` or
``testlens keys`` runs from, so the two always meet on one database. Each setting is
declared once in :data:`DECLARED` (variable, type, default, help, secret or not);
:meth:`Settings.from_env` reads exactly those, and a test checks the README's settings table
against them, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .webhooks.targets import Network, parse_networks

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_REPORT_RESULTS = 200_000
# Branches whose runs are evidence of flakiness on their own (docs/flakiness.md).
DEFAULT_MAINLINE_BRANCHES = ("main", "master", "trunk", "develop")
LEGACY_DATA_DIR = "testlens-data"
"""Where the database lived before, relative to the directory the server was started in."""
DATABASE_FILE = "testlens.db"
MAX_RETENTION_DAYS = 36_500
"""The longest retention accepted (100 years): beyond it a number of days is a typo."""


def default_data_dir(
    environ: Mapping[str, str] | None = None, platform: str = sys.platform
) -> Path:
    """The per-user data directory, ``testlens`` in the platform's place for it:
    ``$XDG_DATA_HOME`` (else ``~/.local/share``) on Linux and other Unixes, as the XDG Base
    Directory specification says; ``~/Library/Application Support`` on macOS;
    ``%LOCALAPPDATA%`` on Windows."""
    env = os.environ if environ is None else environ
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    if platform == "win32":
        local = env.get("LOCALAPPDATA", "")
        base = Path(local) if local else home / "AppData" / "Local"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_DATA_HOME", "")
        # The specification: a relative path is invalid and must be ignored.
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / "testlens"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _flag(text: str) -> bool:
    """On or off, as people write it in an environment file."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


RATE_LIMIT_STORES = ("memory", "database", "redis")


def _rate_limit_store(text: str) -> str:
    store = text.strip().lower()
    if store not in RATE_LIMIT_STORES:
        raise ValueError(text)
    return store


def _branches(text: str) -> tuple[str, ...]:
    return tuple(branch.strip() for branch in text.split(",") if branch.strip())


def retention_days(text: str) -> int:
    """A retention in whole days, from 1 to :data:`MAX_RETENTION_DAYS`."""
    days = int(text)
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise ValueError(f"{days} days is not between 1 and {MAX_RETENTION_DAYS}")
    return days


def _positive_seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{text} is not a positive number of seconds")
    return seconds


def _amount(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(f"{text} is not an amount of money")
    return value


FIX_PULL_REQUESTS = ("auto", "off")


def _fix_pull_requests(text: str) -> str:
    value = text.strip().lower()
    if value not in FIX_PULL_REQUESTS:
        raise ValueError(text)
    return value


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text} is not an http(s) URL")
    return text.rstrip("/")


class SettingError(ValueError):
    """A setting the server cannot start with, found once the settings are read (a key
    file that does not hold a key): ``testlens serve`` says so in one line."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One ``TESTLENS_*`` variable: which field it sets and how its text is read."""

    variable: str
    field: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


DECLARED: tuple[Setting, ...] = (
    Setting(
        "TESTLENS_DATA_DIR",
        "data_dir",
        Path,
        "where the SQLite database lives (default: the per-user data directory)",
    ),
    Setting(
        "TESTLENS_DATABASE_URL",
        "database_url",
        str,
        "the database, e.g. postgresql://user@host:5432/testlens",
        secret=True,  # may carry a password
    ),
    Setting(
        "TESTLENS_DATABASE_TIMEOUT_SECONDS",
        "database_timeout_seconds",
        float,
        "PostgreSQL: seconds to connect, or to wait for a pooled connection, before a request "
        "answers 503",
    ),
    Setting(
        "TESTLENS_STATEMENT_TIMEOUT_SECONDS",
        "statement_timeout_seconds",
        float,
        "PostgreSQL: seconds one statement may run",
    ),
    Setting(
        "TESTLENS_MAX_UPLOAD_BYTES",
        "max_upload_bytes",
        int,
        "upload limit, before and after decompression",
    ),
    Setting(
        "TESTLENS_MAX_REPORT_RESULTS",
        "max_report_results",
        _positive,
        "most results (test attempts) one report may hold; a larger report is refused "
        "with 413 while it is read",
    ),
    Setting(
        "TESTLENS_INGEST_CONCURRENCY",
        "ingest_concurrency",
        _positive,
        "uploads one server process parses and stores at once; more wait their turn, holding "
        "no thread (default: 2 on SQLite, which has one writer, 4 on PostgreSQL)",
    ),
    Setting(
        "TESTLENS_MAINLINE_BRANCHES",
        "mainline_branches",
        _branches,
        "branches whose runs are statistical evidence of flakiness",
    ),
    Setting(
        "TESTLENS_WEBHOOK_MAX_ATTEMPTS",
        "webhook_max_attempts",
        int,
        "delivery attempts before a webhook delivery is dead-lettered",
    ),
    Setting(
        "TESTLENS_WEBHOOK_BACKOFF_BASE_SECONDS",
        "webhook_backoff_base_seconds",
        float,
        "first retry delay of a webhook delivery (doubling each time, with jitter)",
    ),
    Setting(
        "TESTLENS_WEBHOOK_BACKOFF_CAP_SECONDS",
        "webhook_backoff_cap_seconds",
        float,
        "the longest retry delay of a webhook delivery",
    ),
    Setting(
        "TESTLENS_WEBHOOK_POLL_SECONDS",
        "webhook_poll_seconds",
        float,
        "how often the webhook worker looks for due deliveries",
    ),
    Setting(
        "TESTLENS_WEBHOOK_TIMEOUT_SECONDS",
        "webhook_timeout_seconds",
        float,
        "the HTTP timeout of one webhook delivery attempt",
    ),
    Setting(
        "TESTLENS_WEBHOOK_ALLOWED_NETWORKS",
        "webhook_allowed_networks",
        parse_networks,
        "networks (CIDR, comma-separated) webhooks may be sent to besides public addresses, "
        "for receivers on a private network",
    ),
    Setting(
        "TESTLENS_RETENTION_RESULTS_DAYS",
        "retention_results_days",
        retention_days,
        "days test results (every attempt's status, duration and output) are kept",
    ),
    Setting(
        "TESTLENS_RETENTION_RUNS_DAYS",
        "retention_runs_days",
        retention_days,
        "days runs (an upload's metadata and totals) are kept; a run goes only once its "
        "results have",
    ),
    Setting(
        "TESTLENS_RETENTION_EVENTS_DAYS",
        "retention_events_days",
        retention_days,
        "days state changes of tests (flaky, resolved, broken, quarantined) are kept",
    ),
    Setting(
        "TESTLENS_RETENTION_DELIVERIES_DAYS",
        "retention_deliveries_days",
        retention_days,
        "days delivered and dead-lettered webhook deliveries are kept",
    ),
    Setting(
        "TESTLENS_RETENTION_SWEEP_SECONDS",
        "retention_sweep_seconds",
        _positive_seconds,
        "how often the retention sweeper deletes what is older than the retention",
    ),
    Setting(
        "TESTLENS_RATE_LIMITS_ENABLED",
        "rate_limits_enabled",
        _flag,
        "whether the API's rate limits apply (README: Rate limits)",
    ),
    Setting(
        "TESTLENS_RATE_LIMIT_STORE",
        "rate_limit_store",
        _rate_limit_store,
        "where rate-limit counts live: memory (one process), database (shared by every "
        "process on the database) or redis (default: redis when TESTLENS_REDIS_URL is set, "
        "else database on PostgreSQL and memory on SQLite)",
    ),
    Setting(
        "TESTLENS_REDIS_URL",
        "redis_url",
        str,
        "the Redis server rate-limit counts are kept in, e.g. redis://127.0.0.1:6379/0",
        secret=True,  # may carry a password
    ),
    Setting(
        "TESTLENS_RATE_LIMIT_UPLOADS_PER_MINUTE",
        "rate_limit_uploads_per_minute",
        _positive,
        "uploads (POST /api/test-results) a minute per repository",
    ),
    Setting(
        "TESTLENS_RATE_LIMIT_REPOS_PER_MINUTE",
        "rate_limit_repos_per_minute",
        _positive,
        "requests a minute per tenant to /api/repos and /api/tests",
    ),
    Setting(
        "TESTLENS_RATE_LIMIT_ANALYTICS_PER_MINUTE",
        "rate_limit_analytics_per_minute",
        _positive,
        "requests a minute per tenant to /api/analytics",
    ),
    Setting(
        "TESTLENS_CI_COST_PER_HOUR",
        "ci_cost_per_hour",
        _amount,
        "US dollars one hour of CI costs, for the cost savings /api/analytics/dashboard shows",
    ),
    Setting(
        "TESTLENS_RATE_LIMIT_V1_PER_MINUTE",
        "rate_limit_v1_per_minute",
        _positive,
        "requests a minute per tenant to /api/v1",
    ),
    Setting(
        "TESTLENS_RATE_LIMIT_V1_BURST",
        "rate_limit_v1_burst",
        _positive,
        "requests per tenant /api/v1 accepts at once, above its rate a minute",
    ),
    Setting(
        "TESTLENS_RATE_LIMIT_API_PER_MINUTE",
        "rate_limit_api_per_minute",
        _positive,
        "requests a minute per tenant to the rest of /api",
    ),
    Setting(
        "TESTLENS_LEASE_SECONDS",
        "lease_seconds",
        _positive_seconds,
        "how long an orchestrated run's batch stays with a worker that stops heartbeating "
        "before it goes back to the queue",
    ),
    Setting(
        "TESTLENS_HEARTBEAT_SECONDS",
        "heartbeat_seconds",
        _positive_seconds,
        "how often workers are told to heartbeat (keep it well under the lease)",
    ),
    Setting(
        "TESTLENS_RUN_INACTIVITY_SECONDS",
        "run_inactivity_seconds",
        _positive_seconds,
        "an orchestrated run with no call from any worker for this long fails",
    ),
    Setting(
        "TESTLENS_QUEUE_MAX_WAITING_ITEMS",
        "queue_max_waiting_items",
        _positive,
        "items (files) a tenant's orchestrated runs may have waiting; a new run beyond it "
        "answers 503 QUEUE_FULL",
    ),
    Setting(
        "TESTLENS_QUEUE_MAX_ACTIVE_RUNS",
        "queue_max_active_runs",
        _positive,
        "orchestrated runs a tenant may have pending or running at once",
    ),
    Setting(
        "TESTLENS_WS_MAX_CONNECTIONS",
        "ws_max_connections_per_tenant",
        _positive,
        "live WebSocket connections (/api/v1/ws) one tenant may hold open, over all server "
        "processes; the next is closed with 1013",
    ),
    Setting(
        "TESTLENS_RETENTION_LIVE_EVENTS_DAYS",
        "retention_live_events_days",
        retention_days,
        "days a run's live events (/api/v1/ws) are kept after the run ends",
    ),
    Setting(
        "TESTLENS_SECRET_KEY",
        "secret_key",
        str,
        "signs tokens and presigned URLs and encrypts stored webhook secrets "
        "(default: a random key kept in the database)",
        secret=True,
    ),
    Setting(
        "TESTLENS_METRICS_TOKEN",
        "metrics_token",
        str,
        "the bearer token Prometheus sends to GET /metrics (default: none, metrics off)",
        secret=True,
    ),
    Setting(
        "TESTLENS_LLM_BASE_URL",
        "llm_base_url",
        _http_url,
        "an OpenAI-compatible API (e.g. https://api.openai.com/v1) that writes root-cause "
        "explanations and fix proposals (default: none, the built-in classifier answers)",
    ),
    Setting("TESTLENS_LLM_MODEL", "llm_model", str, "the model the LLM API is asked for"),
    Setting(
        "TESTLENS_LLM_API_KEY",
        "llm_api_key",
        str,
        "the key sent to the LLM API as a bearer token (none for a local server)",
        secret=True,
    ),
    Setting(
        "TESTLENS_LLM_TIMEOUT_SECONDS",
        "llm_timeout_seconds",
        _positive_seconds,
        "seconds one LLM request may take; a request is retried once",
    ),
    Setting(
        "TESTLENS_GITHUB_APP_ID",
        "github_app_id",
        str,
        "the GitHub App's id, for its REST calls (docs/github.md)",
    ),
    Setting(
        "TESTLENS_GITHUB_PRIVATE_KEY_FILE",
        "github_private_key_file",
        Path,
        "the file holding the GitHub App's private key (PEM), for its REST calls",
        secret=True,  # says where the key is
    ),
    Setting(
        "TESTLENS_GITHUB_WEBHOOK_SECRET",
        "github_webhook_secret",
        str,
        "the GitHub App's webhook secret; without it POST /api/github/webhooks answers 404",
        secret=True,
    ),
    Setting(
        "TESTLENS_GITHUB_API_URL",
        "github_api_url",
        _http_url,
        "GitHub's REST API: https://HOST/api/v3 for GitHub Enterprise Server",
    ),
    Setting(
        "TESTLENS_GITHUB_TENANT",
        "github_tenant",
        str,
        "the tenant (name) the GitHub App's installations belong to (default: the only "
        "tenant, if there is just one; else each is linked with testlens github link)",
    ),
    Setting(
        "TESTLENS_FIX_PULL_REQUESTS",
        "fix_pull_requests",
        _fix_pull_requests,
        "auto: open a draft pull request proposing a fix for a flaky test whose root cause is "
        "clear, when both an LLM and the GitHub App are configured (docs/fix-attempts.md); "
        "off: never",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    data_dir: Path
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_report_results: int = DEFAULT_MAX_REPORT_RESULTS
    ingest_concurrency: int | None = None
    mainline_branches: tuple[str, ...] = DEFAULT_MAINLINE_BRANCHES
    webhook_max_attempts: int = 8
    webhook_backoff_base_seconds: float = 10.0
    webhook_backoff_cap_seconds: float = 3600.0
    webhook_poll_seconds: float = 1.0
    webhook_timeout_seconds: float = 10.0
    webhook_allowed_networks: tuple[Network, ...] = ()
    database_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 120.0
    retention_results_days: int = 180
    retention_runs_days: int = 180
    retention_events_days: int = 365
    retention_deliveries_days: int = 30
    retention_sweep_seconds: float = 3600.0
    rate_limits_enabled: bool = True
    rate_limit_store: str | None = None  # None: chosen by the database (see DECLARED)
    redis_url: str | None = field(default=None, repr=False)
    rate_limit_uploads_per_minute: int = 100
    rate_limit_repos_per_minute: int = 60
    rate_limit_analytics_per_minute: int = 100
    ci_cost_per_hour: float = 0.48  # GitHub Actions' standard 2-core Linux runner, $0.008/min
    rate_limit_v1_per_minute: int = 500
    rate_limit_v1_burst: int = 1000
    rate_limit_api_per_minute: int = 300
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    run_inactivity_seconds: float = 1800.0
    queue_max_waiting_items: int = 500_000
    queue_max_active_runs: int = 200
    ws_max_connections_per_tenant: int = 10
    retention_live_events_days: int = 7
    secret_key: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    llm_timeout_seconds: float = 30.0
    github_app_id: str | None = None
    github_private_key_file: Path | None = field(default=None, repr=False)
    github_webhook_secret: str | None = field(default=None, repr=False)
    github_api_url: str = "https://api.github.com"
    github_tenant: str | None = None
    fix_pull_requests: str = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"data_dir": default_data_dir(env)}
        for setting in DECLARED:
            text = env.get(setting.variable, "").strip()
            if not text:
                continue
            try:
                values[setting.field] = setting.parse(text)
            except ValueError:
                shown = "(hidden)" if setting.secret else repr(text)
                raise ValueError(f"{setting.variable}={shown} is not valid") from None
        values["data_dir"] = Path(values["data_dir"]).resolve()
        values.setdefault("database_url", f"sqlite:///{values['data_dir'] / DATABASE_FILE}")
        _check_llm(values)
        return cls(**values)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file, when the database is an SQLite file."""
        if not self.database_url.startswith("sqlite") or "///" not in self.database_url:
            return None
        path = self.database_url.split("///", 1)[1].split("?", 1)[0]
        return None if not path or path == ":memory:" else Path(path)

    @property
    def database_shown(self) -> str:
        """The database, for people: an SQLite file's path, or the URL without its password."""
        path = self.sqlite_path
        return str(path) if path is not None else hide_password(self.database_url)


def _check_llm(values: Mapping[str, Any]) -> None:
    """The LLM settings make sense together, and the optional ``openai`` package they need is
    installed: said at start-up rather than at the first analysis."""
    if bool(values.get("llm_base_url")) != bool(values.get("llm_model")):
        raise ValueError("TESTLENS_LLM_BASE_URL and TESTLENS_LLM_MODEL go together: set both")
    if values.get("llm_base_url") and importlib.util.find_spec("openai") is None:
        raise ValueError(
            "TESTLENS_LLM_BASE_URL is set but the openai package is not installed: "
            "pip install 'testlens[llm]'"
        )


def hide_password(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    credentials, _, host = parts.netloc.rpartition("@")
    user = credentials.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
