"""How one CI node finds its share of the tests, for ``testlens shard`` and the pytest plugin.

Every node of a CI run must arrive at the same partition, or tests run twice or never. The
best split comes from the server, which knows every test's history: the plan of the CI run,
found by the run's key (derived from the CI environment, see :func:`ci_env.run_key`), is the
same for every node however many uploads land in between. Without a key (outside a known CI
and without ``--plan-key``) nodes cannot share a server plan, so they split locally: by a
durations file kept in the repository (pytest-split's ``.test_durations`` or a knapsack
report), else by test count. Both depend only on the set of tests, never on the order a node
lists them in, so every node computes the same local split.

A node that has a key but cannot get the run's plan (server down, refusing, or a test list
that differs from the plan's) does not know what the other nodes run. By default it runs
every test (``fallback="all"``): a test may run twice, but none is skipped, and the node says
so in the job log and in its upload. ``fallback="split"`` splits locally instead (fast when
the server is down for every node, but tests are skipped or doubled when only some nodes
reach it); ``fallback="fail"`` stops the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from ..core.durations import parse_durations
from ..core.identity import TestKey
from ..core.model import ReportError
from ..core.sharding import GroupBy, plan_shards
from .http import Budget, Client, ServerError

CLIENT_OPTIONS: dict[str, Any] = {"attempts": 3, "backoff": 0.5, "max_delay": 5.0, "timeout": 10.0}
"""Retries and the per-try timeout for calls a test run waits on: a refusing server costs
about a second before the run goes on without it, a silent one at most the step's budget."""


SERVER_FAILURES = (ServerError, httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError)
"""How a call to the server ends without an answer to use: refused, unreachable, or answered
in a shape the API does not promise."""


def describe_failure(exc: Exception, url: str) -> str:
    """One of :data:`SERVER_FAILURES` (or anything else) in words for a warning."""
    if isinstance(exc, ServerError):
        return f"the server said {exc.status} {exc.code}: {exc.message}"
    if isinstance(exc, httpx.HTTPError):
        return f"could not reach {url}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def parse_shard_spec(spec: str, shards: int | None = None) -> tuple[int, int]:
    """(index, shards) from ``I/K``, or from ``I`` and ``shards``; ValueError if malformed.

    The index counts from 0, as ``ShardPlan.shard`` and most CI systems' node indexes do.
    """
    index_text, slash, total_text = spec.strip().partition("/")
    try:
        index = int(index_text)
        total = int(total_text) if slash else shards
    except ValueError:
        raise ValueError(f"expected I or I/K (e.g. 0/4), not {spec!r}") from None
    if total is None:
        raise ValueError(f"the number of shards is missing: expected I/K (e.g. 0/4), not {spec!r}")
    if shards is not None and total != shards:
        raise ValueError(f"{spec!r} says {total} shards, but the number of shards is {shards}")
    if total < 1:
        raise ValueError(f"the number of shards must be at least 1, not {total}")
    if not 0 <= index < total:
        raise ValueError(f"the shard index counts from 0: expected 0..{total - 1}, not {index}")
    return index, total


Fallback = Literal["all", "split", "fail"]
FALLBACKS: tuple[Fallback, ...] = ("all", "split", "fail")


class ShardingError(Exception):
    """No split could be had and the caller asked to stop rather than fall back."""


@dataclass(frozen=True, slots=True)
class ServerTarget:
    """Where to ask for a plan, and for which repository and environment; ``plan_key``
    names the CI run whose nodes share one plan, ``workflow_run_id`` the run they upload as."""

    url: str
    token: str | None
    repo: str
    environment: str | None = None
    plan_key: str | None = None
    workflow_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class Split:
    """The tests of every shard, each in the order the caller listed them.

    ``source`` says where the split came from; ``plan_id`` is the server's plan;
    ``everything`` is true when no plan could be had and every shard holds every test;
    ``warnings`` are the steps that failed on the way.
    """

    shards: tuple[tuple[str, ...], ...]
    source: str
    plan_id: str | None = None
    warnings: tuple[str, ...] = ()
    everything: bool = False

    def label(self, index: int) -> str:
        """How shard ``index`` was chosen, as uploads record it: ``I/K`` from a server
        plan, ``I/K local`` split without one, ``all`` every test."""
        if self.everything:
            return "all"
        local = "" if self.plan_id else " local"
        return f"{index}/{len(self.shards)}{local}"


def split_tests(
    tests: Sequence[str],
    shards: int,
    *,
    group_by: GroupBy = "none",
    server: ServerTarget | None = None,
    plan_id: str | None = None,
    durations: Path | None = None,
    fallback: Fallback = "all",
    budget: Budget | None = None,
) -> Split:
    """Split ``tests`` (pytest node ids or knapsack spec paths) into ``shards`` shards.

    With ``server`` and a plan key (or ``plan_id``), the CI run's plan is fetched; a plan
    that leaves out any of ``tests`` is not used (those tests would run nowhere), and a plan
    that cannot be had is handled as ``fallback`` says (see the module docstring). Split
    locally, ``durations`` is read, and tests it does not list count as the mean of those it
    does, as pytest-split counts them; without it every test counts the same.
    """
    if shards < 1:
        raise ValueError(f"the number of shards must be at least 1, not {shards}")
    ids = list(dict.fromkeys(tests))
    if not ids:
        return Split(((),) * shards, "no tests")
    keys = {test: TestKey.from_nodeid(test) for test in ids}
    warnings: list[str] = []
    if server is not None and not (server.plan_key or plan_id):
        warnings.append(
            "no CI run key (not in a known CI, and no plan key given): nodes cannot share "
            "the server's plan, so this node splits locally"
        )
    elif server is not None:
        try:
            answer = _server_plan(server, plan_id, shards, group_by, ids, budget)
            shard_of = _shard_of_keys(answer["shards"], set(keys.values()))
            found_id = str(answer["plan_id"])
            return Split(_arrange(ids, keys, shard_of, shards), f"server plan {found_id}", found_id)
        except SERVER_FAILURES as exc:
            reason = f"no shard plan from the server: {describe_failure(exc, server.url)}"
            if fallback == "fail":
                raise ShardingError(reason) from None
            if fallback == "all":
                return Split(
                    (tuple(ids),) * shards,
                    "every test (no plan)",
                    warnings=(
                        reason,
                        f"running ALL {len(ids)} tests on this node, so that none is skipped "
                        "by nodes that got the plan (fallback 'split' splits locally instead)",
                    ),
                    everything=True,
                )
            warnings.append(
                f"{reason}; splitting locally: if other nodes of this run got the server's "
                "plan, tests may run twice or not at all"
            )
    weights = dict.fromkeys(keys.values(), 1.0)
    source = "equal counts"
    if durations is not None:
        try:
            known = parse_durations(durations.read_bytes())
        except (OSError, ReportError) as exc:
            warnings.append(f"cannot use durations file {durations}: {exc}")
        else:
            # Only the listed tests count towards the mean: tests since deleted must not skew it.
            found = [known[key] for key in weights if key in known]
            if found:
                mean = sum(found) / len(found)
                weights = {key: known.get(key, mean) for key in weights}
                source = f"durations file {durations}"
            else:
                warnings.append(f"durations file {durations} lists none of the tests")
    if source == "equal counts":
        warnings.append("no test durations known: splitting by test count")
    elif warnings:
        warnings.append(f"splitting by {source} instead")
    plan = plan_shards(weights, shards, group_by=group_by)
    shard_of = {key: index for index, shard in enumerate(plan.shards) for key in shard}
    return Split(_arrange(ids, keys, shard_of, shards), source, None, tuple(warnings))


def _server_plan(
    server: ServerTarget,
    plan_id: str | None,
    shards: int,
    group_by: GroupBy,
    ids: list[str],
    budget: Budget | None,
) -> dict[str, Any]:
    with Client(server.url, server.token, budget=budget, **CLIENT_OPTIONS) as client:
        if plan_id:
            response = client.request("GET", f"/api/shard-plans/{plan_id}")
        else:
            response = client.request(
                "POST",
                "/api/shard-plans",
                json={
                    "repo": server.repo,
                    "environment": server.environment,
                    "shards": shards,
                    "group_by": group_by,
                    "tests": ids,
                    "plan_key": server.plan_key,
                    "workflow_run_id": server.workflow_run_id,
                },
            )
    plan = response.json()
    if len(plan["shards"]) != shards:
        raise ValueError(f"plan {plan['plan_id']} has {len(plan['shards'])} shards, not {shards}")
    return plan


def _shard_of_keys(plan_shards_ids: list[list[str]], wanted: set[TestKey]) -> dict[TestKey, int]:
    """Shard number per test of the plan; ValueError if a wanted test is in none of them."""
    shard_of: dict[TestKey, int] = {}
    for index, shard in enumerate(plan_shards_ids):
        for nodeid in shard:
            shard_of.setdefault(TestKey.from_nodeid(nodeid), index)
    missing = wanted.difference(shard_of)
    if missing:
        example = min(missing).nodeid
        raise ValueError(f"it leaves out {len(missing)} of the tests given, e.g. {example}")
    return shard_of


def _arrange(
    ids: list[str], keys: dict[str, TestKey], shard_of: dict[TestKey, int], shards: int
) -> tuple[tuple[str, ...], ...]:
    arranged: list[list[str]] = [[] for _ in range(shards)]
    for test in ids:
        arranged[shard_of[keys[test]]].append(test)
    return tuple(tuple(shard) for shard in arranged)
