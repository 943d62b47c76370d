"""RSpec's JSON formatter (``rspec --format json``): ``examples[]`` plus a ``summary``.

An example's ``full_description`` is its example-group descriptions followed by its own
``description``, joined by spaces; the group part becomes the suite and the description the
name, so that two examples named alike in different groups stay distinct. ``pending`` examples
are skipped: they either did not run (``xit``, ``skip``) or ran expecting to fail
(``pending``), and neither says that the code works.

Errors outside examples (a spec file that fails to load) leave no example behind, only a count
and the formatter's ``messages``; they become one errored test so that the run is not green.
"""

from __future__ import annotations

from typing import Any

from ..model import Attempt, AttemptStatus, TestCase
from . import Format

_STATUSES: dict[str, AttemptStatus] = {"passed": "passed", "failed": "failed", "pending": "skipped"}
_OUTSIDE_EXAMPLES = "(errors outside of examples)"


def _matches(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("examples"), list)
        and isinstance(document.get("summary"), dict)
        and "example_count" in document["summary"]
    )


def _parse(document: dict[str, Any]) -> list[TestCase]:
    tests = [_example(example) for example in document["examples"]]
    if document["summary"].get("errors_outside_of_examples_count"):
        messages = document.get("messages") or []
        tests.append(
            TestCase(
                name=_OUTSIDE_EXAMPLES,
                attempts=[
                    Attempt(status="error", message="\n".join(messages) or None),
                ],
            )
        )
    return tests


def _example(example: dict[str, Any]) -> TestCase:
    description = example.get("description") or ""
    full = example.get("full_description") or description
    suite = ""
    if description and full.endswith(description):
        suite = full[: -len(description)].strip()
    exception = example.get("exception") or {}
    backtrace = exception.get("backtrace") or []
    return TestCase(
        name=description or full,
        suite=suite,
        file=(example.get("file_path") or "").removeprefix("./"),
        attempts=[
            Attempt(
                status=_STATUSES[example["status"]],
                duration_ms=(example.get("run_time") or 0.0) * 1000,
                message=exception.get("message") or example.get("pending_message"),
                error_type=exception.get("class"),
                stack="\n".join(backtrace) or None,
            )
        ],
    )


FORMATS = (Format("rspec", "json", _matches, _parse),)
