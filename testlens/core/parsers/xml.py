"""Loading untrusted XML: no entity expansion, no DTD loading, no network, no huge trees.

Test reports never need entities, so any document that declares one (XXE, billion laughs)
is rejected outright instead of being parsed with the entities left unexpanded.

Reports that are not well-formed XML. Some writers leave an ``&`` or ``<`` of a message
unescaped, copy a terminal's control characters into output, spell an end tag in another
case than its start tag, or stop writing before the last closing tags (a killed CI step),
and the tools that show such reports accept them. Such a document is read again, only once
the strict parse has failed, by lxml's recovering parser (``recover=True``), with the same
options: entity declarations are still refused before any parsing, and DTDs and the
network stay off. The document is then marked as recovered, with the first error the strict
parser reported, because recovery reads the damaged part by guesswork:

* before the recovering parser sees it, an ``&`` that begins no character or predefined
  entity reference, and a ``<`` that begins no markup, are escaped: left alone, lxml drops
  them, and with the ``&`` the name that follows it (``Tom&Jerry`` would read ``Tom``),
  which would change a test's name, and with it its identity;
* a document that ends before a test's element closes is refused, not recovered: the test's
  result may be what was cut off (its ``<failure>`` never written), so reading it would
  pass a test that may have failed. Ending before the closing tags of the suites around the
  tests loses only tests that were never written, and recovery reads all that was;
* whatever does not even give a root element stays invalid.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from lxml import etree

from ..model import ReportError

TEST_ELEMENTS = ("testcase", "test-case", "UnitTestResult", "test")
"""Local names of the element that holds one test, in each XML format read: JUnit, NUnit,
TRX and xUnit.net."""

_PARSER_OPTIONS: dict[str, Any] = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)

# What recovery would drop, and how it is escaped instead: an "&" that begins no reference
# XML defines without a DTD, and a "<" followed by nothing that can begin a tag, comment, CDATA
# section or processing instruction. CDATA sections are matched first and kept as they are,
# as their content is literal; one never closed runs to the end of the data, which keeps the
# search linear however many of them a document opens.
_STRAY = re.compile(
    rb"<!\[CDATA\[.*?(?:\]\]>|\Z)"
    rb"|&(?!(?:lt|gt|amp|apos|quot|#[0-9]+|#x[0-9a-fA-F]+);)"
    rb"|<(?![A-Za-z_:/!?\x80-\xff])",
    re.DOTALL,
)
_ESCAPES = {b"&": b"&amp;", b"<": b"&lt;"}


def xml_parser(**options: Any) -> etree.XMLParser:
    """A parser with the safe options, and ``options`` (a ``target``, ``recover``).

    A fresh parser per call: lxml parsers are not thread-safe and the server parses uploads
    on worker threads.
    """
    return etree.XMLParser(**_PARSER_OPTIONS, **options)


def check_xml(data: bytes) -> None:
    """Refuse, before any parser sees them, documents no parser option makes safe."""
    if b"\x00" in data:
        raise ReportError("the report contains NUL bytes, which XML does not allow")
    if b"<!ENTITY" in data:
        raise ReportError("XML entity declarations are not allowed in reports")


class XmlDocument(NamedTuple):
    """A loaded document, and whether it had to be recovered."""

    root: etree._Element
    recovered_reason: str | None = None
    """The first error of the strict parse, when the recovering parser read the document."""


def read_xml(data: bytes) -> XmlDocument:
    """Parse ``data``, recovering it if it is not well-formed (see the module docstring);
    raise ReportError with the reason when it cannot be read."""
    check_xml(data)
    try:
        root = etree.fromstring(data, parser=xml_parser())
    except etree.XMLSyntaxError as exc:
        return _recover(data, exc)
    if root is None:
        raise ReportError("invalid XML: no root element")
    return XmlDocument(root)


def load_xml(data: bytes) -> etree._Element:
    """The root element of :func:`read_xml`'s document."""
    return read_xml(data).root


def _recover(data: bytes, error: etree.XMLSyntaxError) -> XmlDocument:
    reason = error.msg
    parser = etree.XMLPullParser(
        events=("end",),
        tag=[f"{{*}}{name}" for name in TEST_ELEMENTS],
        recover=True,
        **_PARSER_OPTIONS,
    )
    # The parser hands out each element's end as it reads its end tag, and only closes what
    # is still open when told the data is over: a test that ends then was cut off.
    parser.feed(_STRAY.sub(lambda match: _ESCAPES.get(match[0], match[0]), data))
    for _ in parser.read_events():
        pass
    try:
        root = parser.close()
    except etree.XMLSyntaxError:
        root = None  # nothing that even opens an element
    if root is None:
        raise ReportError(f"invalid XML: {reason}")
    cut = next((element for _, element in parser.read_events()), None)
    if cut is not None:
        name = cut.get("name") or cut.get("testName")
        test = f"<{local_name(cut)}>" + (f" {name!r}" if name else "")
        raise ReportError(
            f"invalid XML: the report ends inside test {test}, so its result is unknown ({reason})"
        )
    return XmlDocument(root, reason)


def local_name(element: etree._Element) -> str:
    """The tag without its namespace (TRX and some NUnit files are namespaced)."""
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]
