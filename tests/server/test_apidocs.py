"""``/docs`` and ``/redoc`` work on a server without internet access: every script, style
and icon they reference is served by the server itself."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_only_from_the_server_itself(anonymous, page):
    response = anonymous.get(page)
    assert response.status_code == 200
    html = response.text
    assert "/openapi.json" in html
    assert not re.search(r"https?://", html), "the page references another host"
    assets = re.findall(r"""(?:src|href)=["']?([^"'\s>]+)""", html)
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts, "the page loads its script"
    for asset in assets:
        loaded = anonymous.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 1000, asset


def test_the_openapi_document_is_served(anonymous):
    document = anonymous.get("/openapi.json").json()
    assert "/api/test-results" in document["paths"]
