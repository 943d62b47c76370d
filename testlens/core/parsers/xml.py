"""Loading untrusted XML: no entity expansion, no DTD loading, no network, no huge trees.

Test reports never need entities, so any document that declares one (XXE, billion laughs)
is rejected outright instead of being parsed with the entities left unexpanded.
"""

from __future__ import annotations

from lxml import etree

from ..model import ReportError

_PARSER_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not thread-safe and the server parses
    # uploads on worker threads.
    return etree.XMLParser(**_PARSER_OPTIONS)


def load_xml(data: bytes) -> etree._Element:
    """Parse ``data`` and return the root element, or raise ReportError with the reason."""
    if b"\x00" in data:
        raise ReportError("the report contains NUL bytes, which XML does not allow")
    if b"<!ENTITY" in data:
        raise ReportError("XML entity declarations are not allowed in reports")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise ReportError(f"invalid XML: {exc}") from None
    if root is None:
        raise ReportError("invalid XML: no root element")
    return root


def local_name(element: etree._Element) -> str:
    """The tag without its namespace (TRX and some NUnit files are namespaced)."""
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]
