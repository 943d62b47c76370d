"""Reports that are not well-formed XML, read through lxml's recovering parser and flagged.

Each kind of damage real writers leave behind, written by hand: what is read from it, the
flag, and the reason (the strict parser's first error, as libxml2 words it). Damage that
would make a test's result a guess (a file cut off inside a test) is refused instead.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from testlens.cli import main
from testlens.core.model import ReportError, TestCase
from testlens.core.parsers import parse_report


def results(tests: list[TestCase]) -> list[tuple[str, str, str | None, str | None]]:
    """(name, status, message, stack) of each test's one attempt."""
    read = []
    for test in tests:
        (attempt,) = test.attempts
        read.append((test.name, attempt.status, attempt.message, attempt.stack))
    return read


def test_a_well_formed_report_is_not_flagged():
    report = parse_report(b'<testsuite><testcase name="a"/></testsuite>')
    assert (report.recovered, report.recovered_reason) == (False, None)
    assert report.to_dict()["recovered"] is False


def test_unescaped_ampersands_are_kept_as_written():
    """Left to the recovering parser, ``R&D`` would read ``R``: a test renamed."""
    report = parse_report(
        b'<testsuite name="s"><testcase classname="c" name="R&D"/>'
        b'<testcase classname="c" name="a"><failure message="x & y">a && b</failure></testcase>'
        b"</testsuite>"
    )
    assert results(report.tests) == [
        ("R&D", "passed", None, None),
        ("a", "failed", "x & y", "a && b"),
    ]
    assert report.recovered
    assert report.recovered_reason == "EntityRef: expecting ';', line 1, column 54"


def test_unescaped_less_than_signs_are_kept_as_written():
    report = parse_report(
        b'<testsuite><testcase name="a"><failure message="expected a < b">'
        b'got 1<2 and x <= y</failure></testcase><testcase name="b"/></testsuite>'
    )
    assert results(report.tests) == [
        ("a", "failed", "expected a < b", "got 1<2 and x <= y"),
        ("b", "passed", None, None),
    ]
    assert report.recovered_reason == (
        "Unescaped '<' not allowed in attributes values, line 1, column 60"
    )


def test_a_generic_type_in_a_message_cuts_the_message_but_loses_no_test():
    """``List<String>`` cannot be told from a tag: the text stops there, the tests remain."""
    report = parse_report(
        b'<testsuite><testcase name="a"><failure>expected List<String> but was null</failure>'
        b'</testcase><testcase name="b"/></testsuite>'
    )
    assert results(report.tests) == [
        ("a", "failed", "expected List", "expected List"),
        ("b", "passed", None, None),
    ]
    assert report.recovered_reason == (
        "Opening and ending tag mismatch: String line 1 and failure, line 1, column 84"
    )


def test_control_characters_are_dropped_from_text_and_replaced_in_attributes():
    """A terminal's colour codes copied into a report: XML allows no ESC or backspace."""
    report = parse_report(
        b'<testsuite><testcase name="a"><failure message="bad\x08char">boom</failure>'
        b"<system-out>\x1b[31mred\x1b[0m</system-out></testcase>"
        b'<testcase name="b"/></testsuite>'
    )
    first, second = report.tests
    assert (first.status, first.attempts[0].message) == ("failed", "bad\ufffdchar")
    assert first.attempts[0].stdout == "[31mred[0m"
    assert second.status == "passed"
    assert report.recovered_reason == ("invalid character in attribute value, line 1, column 52")


def test_end_tags_in_another_case_close_their_elements():
    report = parse_report(
        b'<testsuite><testcase name="a"></TestCase>'
        b'<testcase name="b"><failure message="m"></Failure></testcase></testsuite>'
    )
    assert results(report.tests) == [("a", "passed", None, None), ("b", "failed", "m", None)]
    assert report.recovered_reason == (
        "Opening and ending tag mismatch: testcase line 1 and TestCase, line 1, column 42"
    )


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"</testsuite></testsui", "expected '>', line 1, column 126"),
        (b"</testsuite>", "Premature end of data in tag testsuites line 1, line 1, column 117"),
        (b"\n", "Premature end of data in tag testsuite line 1, line 2, column 1"),
    ],
    ids=["in the last end tag", "without the last end tag", "without the suites' end tags"],
)
def test_a_report_cut_off_after_its_last_test_is_read_whole(tail, reason):
    report = parse_report(
        b'<testsuites><testsuite name="s"><testcase name="a"/>'
        b'<testcase name="b"><failure message="m"/></testcase>' + tail
    )
    assert results(report.tests) == [("a", "passed", None, None), ("b", "failed", "m", None)]
    assert [test.suite for test in report.tests] == ["s", "s"]
    assert (report.recovered, report.recovered_reason) == (True, reason)
    assert report.to_dict()["recovered"] is True


@pytest.mark.parametrize(
    "tail",
    [b'<testcase name="b" ti', b'<testcase name="b" time="1">', b'<testcase name="b"><failure>at'],
    ids=["in its start tag", "after its start tag", "in its failure"],
)
def test_a_report_cut_off_inside_a_test_is_refused(tail):
    """Read as recovered, test b would pass, whatever its cut-off result was."""
    with pytest.raises(ReportError) as refused:
        parse_report(b'<testsuite name="s"><testcase name="a"/>' + tail)
    message = str(refused.value)
    assert message.startswith("invalid XML: the report ends inside test <testcase> 'b', so ")


def test_a_document_without_a_root_is_invalid():
    with pytest.raises(ReportError, match=r"^invalid XML: StartTag: invalid element name"):
        parse_report(b"< testsuite>")


def test_a_recovered_root_of_no_known_format_is_unrecognised():
    with pytest.raises(ReportError) as refused:
        parse_report(b"<html><body>R&D</body></html>")
    assert str(refused.value) == (
        "unrecognised XML report: root element <html> "
        "(not well-formed: EntityRef: expecting ';', line 1, column 16)"
    )


def test_entity_declarations_are_still_refused_outright():
    damaged = b'<!DOCTYPE t [<!ENTITY x "R&D">]><testsuite><testcase name="&x;"></testsuite>'
    with pytest.raises(ReportError, match="entity declarations are not allowed"):
        parse_report(damaged)


def test_other_xml_formats_are_recovered_too():
    report = parse_report(
        b'<test-run id="0" result="Passed"><test-suite type="Assembly" name="Shop.Tests.dll" '
        b'fullname="/src/Shop.Tests.dll"><test-suite type="TestFixture" name="CartTests" '
        b'fullname="Shop.CartTests" classname="Shop.CartTests"><test-case name="Adds & removes" '
        b'fullname="Shop.CartTests.Adds & removes" result="Passed" duration="0.1"/>'
        b"</test-suite></test-suite></test-run>"
    )
    assert report.format == "nunit"
    assert [(test.name, test.status) for test in report.tests] == [("Adds & removes", "passed")]
    assert report.recovered_reason == "xmlParseEntityRef: no name, line 1, column 239"


def test_testlens_parse_prints_the_flag_and_warns(tmp_path):
    damaged = tmp_path / "damaged.xml"
    damaged.write_bytes(b'<testsuite><testcase name="R&D"/><testcase name="b"/>')
    result = CliRunner().invoke(main, ["parse", str(damaged)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["recovered"] is True
    assert printed["recovered_reason"] == "EntityRef: expecting ';', line 1, column 31"
    assert [test["name"] for test in printed["tests"]] == ["R&D", "b"]
    assert result.stderr == (
        f"testlens: warning: {damaged} is not well-formed XML; what its damaged parts hold "
        "was read by guesswork (EntityRef: expecting ';', line 1, column 31)\n"
    )
