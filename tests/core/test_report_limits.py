"""The cap on results per report: refused while read, at exactly the limit, in every format."""

from __future__ import annotations

import json

import pytest
from lxml import etree

from testlens.core.model import ReportTooLarge
from testlens.core.parsers import MARKUP_PER_RESULT, parse_report


def junit(tests: int, retried: int = 0) -> bytes:
    """``tests`` test cases, the first ``retried`` of them failing once before passing."""
    cases = []
    for n in range(tests):
        rerun = '<flakyFailure message="m"/>' if n < retried else ""
        cases.append(f'<testcase classname="c" name="t{n}">{rerun}</testcase>')
    return f"<testsuite>{''.join(cases)}</testsuite>".encode()


def ctrf(tests: int) -> bytes:
    entries = [{"name": f"t{n}", "status": "passed", "duration": 1} for n in range(tests)]
    return json.dumps({"results": {"tool": {"name": "x"}, "tests": entries}}).encode()


@pytest.mark.parametrize("make", [junit, ctrf], ids=["junit", "ctrf"])
def test_a_report_of_exactly_the_limit_is_read_and_one_more_is_refused(make):
    assert len(parse_report(make(50), max_results=50).tests) == 50
    with pytest.raises(ReportTooLarge) as refused:
        parse_report(make(51), max_results=50)
    assert refused.value.limit == 50
    assert "more than 50 results" in str(refused.value)


def test_retries_count_as_results():
    report = junit(30, retried=20)  # 30 tests, 50 attempts
    assert sum(len(t.attempts) for t in parse_report(report, max_results=50).tests) == 50
    with pytest.raises(ReportTooLarge):
        parse_report(report, max_results=49)


def test_a_damaged_report_counts_each_result_once():
    """Its strict reading stops at the damage, after counting what it read; the recovered
    reading that follows counts afresh."""
    closing = len(b"</testsuite>")
    report = parse_report(junit(50)[:-closing], max_results=50)
    assert report.recovered
    assert len(report.tests) == 50
    with pytest.raises(ReportTooLarge):
        parse_report(junit(51)[:-closing], max_results=50)


def test_xml_with_too_many_test_cases_is_refused_before_it_is_loaded(monkeypatch):
    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the document was parsed")

    # Every way a document is read: as a tree, from parser events, or recovered.
    monkeypatch.setattr(etree, "fromstring", never)
    monkeypatch.setattr(etree, "XMLPullParser", never)
    with pytest.raises(ReportTooLarge):
        parse_report(junit(101), max_results=100)


@pytest.mark.parametrize(
    "document",
    [
        b"<testsuite>" + b"<p/>" * (10 * MARKUP_PER_RESULT + 1) + b"</testsuite>",
        b"[" + b"[]," * (10 * MARKUP_PER_RESULT) + b"[]]",
        b'{"a": [' + b"{}," * (10 * MARKUP_PER_RESULT) + b"{}]}",
    ],
    ids=["xml elements", "json arrays", "json objects"],
)
def test_documents_built_to_be_large_in_memory_are_refused_before_loading(document):
    with pytest.raises(ReportTooLarge) as refused:
        parse_report(document, max_results=10)
    assert f"more than {10 * MARKUP_PER_RESULT:,}" in str(refused.value)


def test_without_a_limit_nothing_is_counted():
    assert len(parse_report(junit(300)).tests) == 300


def test_the_budget_ends_with_the_parse():
    """A refused parse leaves no budget behind for the next one on the thread."""
    with pytest.raises(ReportTooLarge):
        parse_report(junit(11), max_results=10)
    assert len(parse_report(junit(300), max_results=None).tests) == 300
