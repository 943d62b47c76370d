"""The tables. One data model behind every API family: a test seen anywhere is one row here.

One module per area; importing this package registers every table on ``Base.metadata``
(which migrations and the schema test compare against).
"""

from .base import Base, iso, table_of, utcnow
from .builds import Build, Lease, LiveConnection, RunEvent, WorkItem
from .detection import DailyRollup, TestEvent, TestState
from .durations import DurationJob, ShardPlanRecord
from .fixes import FixAttempt
from .github import CiJob, GithubDelivery, GithubInstallation
from .quarantine import Quarantine
from .ratelimits import RateLimitBucket
from .results import FailureSignature, Repository, Run, TestCase, TestResult
from .retention import RetentionPolicy
from .tenants import ApiKey, ServerSecret, Tenant
from .webhooks import Webhook, WebhookDelivery

__all__ = [
    "ApiKey",
    "Base",
    "Build",
    "CiJob",
    "DailyRollup",
    "DurationJob",
    "FailureSignature",
    "FixAttempt",
    "GithubDelivery",
    "GithubInstallation",
    "Lease",
    "LiveConnection",
    "Quarantine",
    "RateLimitBucket",
    "Repository",
    "RetentionPolicy",
    "Run",
    "RunEvent",
    "ServerSecret",
    "ShardPlanRecord",
    "Tenant",
    "TestCase",
    "TestEvent",
    "TestResult",
    "TestState",
    "Webhook",
    "WebhookDelivery",
    "WorkItem",
    "iso",
    "table_of",
    "utcnow",
]
