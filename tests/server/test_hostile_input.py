"""Hostile uploads: each gets a 4xx with the shared body, stores nothing, reads no file,
opens no connection, and leaves memory bounded."""

from __future__ import annotations

import gzip
import http.server
import os
import resource
import threading

import pytest
from builders import free_port, stored, upload

from testlens.core.model import ReportError
from testlens.core.parsers import parse_report

SECRET = "top-secret-marker-5d1c"


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.fixture
def listener():
    """A loopback HTTP server that records every request it receives."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<!ENTITY x 'pwned'>")

        def log_message(self, *args):
            pass

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", hits
    httpd.shutdown()


def billion_laughs() -> bytes:
    entities = ['<!ENTITY lol "lol">']
    for i in range(1, 10):
        previous = "lol" if i == 1 else f"lol{i - 1}"
        entities.append(f'<!ENTITY lol{i} "{("&" + previous + ";") * 10}">')
    return (
        '<?xml version="1.0"?><!DOCTYPE lolz [' + "".join(entities) + "]>"
        '<testsuite><testcase name="&lol9;"/></testsuite>'
    ).encode()


def hostile_cases(secret_path: str, url: str) -> dict[str, bytes]:
    return {
        "xxe-file": (
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret_path}">]>'
            '<testsuite><testcase name="&x;"/></testsuite>'
        ).encode(),
        "xxe-http": (
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "{url}/xxe">]>'
            '<testsuite><testcase name="&x;"/></testsuite>'
        ).encode(),
        "xxe-parameter-entity": (
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "{url}/dtd"> %p;]><testsuite/>'
        ).encode(),
        "external-dtd": (
            f'<?xml version="1.0"?><!DOCTYPE testsuite SYSTEM "{url}/ext.dtd">'
            '<testsuite><testcase name="a"/></testsuite>'
        ).encode(),
        "billion-laughs": billion_laughs(),
        "truncated": b'<testsuites><testsuite name="x"><testcase name="a" time="0.1"><fail',
        "nul-bytes": b'<testsuite><testcase name="a\x00b"/></testsuite>',
        "wrong-root": b'<?xml version="1.0"?><html><body>hello</body></html>',
        "empty": b"",
        "whitespace": b"  \n\t ",
        "binary-garbage": bytes(range(256)) * 64,
        "json-garbage": b'{"numTotalTests": "lots", "testResults": 7',
    }


def test_hostile_reports_are_refused_without_side_effects(tenant, database, secret_file, listener):
    url, hits = listener
    for name, payload in hostile_cases(str(secret_file), url).items():
        if name == "external-dtd":
            continue  # accepted without fetching the DTD: see the test below
        response = upload(tenant.client, payload, filename=f"{name}.xml")
        assert response.status_code in (400, 413, 422), (name, response.status_code)
        body = response.json()
        assert set(body) == {"error", "code", "message", "details"}, name
        assert SECRET not in response.text, name
        assert "pwned" not in response.text, name
    assert hits == [], "the parser fetched a URL"
    assert stored(database, tenant.name) == {"runs": 0, "tests": 0, "results": 0}


def test_parser_rejects_entities_before_expanding(secret_file, listener):
    url, hits = listener
    for name in ("xxe-file", "xxe-http", "billion-laughs", "xxe-parameter-entity"):
        with pytest.raises(ReportError, match="entity"):
            parse_report(hostile_cases(str(secret_file), url)[name])
    # An external DTD reference without entities parses, but the DTD is never fetched.
    report = parse_report(hostile_cases(str(secret_file), url)["external-dtd"])
    assert [t.name for t in report.tests] == ["a"]
    assert hits == []


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_gzip_bomb_is_413_and_memory_stays_bounded(tenant, database):
    # 2 GiB of zeros compresses to about 2 MiB; the server must stop at the 50 MB cap.
    bomb = gzip.compress(b"\0" * (256 * 1024 * 1024), 9) * 8
    before = _peak_rss_mib()
    response = upload(tenant.client, bomb, filename="bomb.xml.gz")
    grown = _peak_rss_mib() - before
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert grown < 400, f"peak memory grew by {grown:.0f} MiB"
    assert stored(database, tenant.name)["runs"] == 0


def test_60_mb_upload_is_413(tenant, database):
    big = b"<testsuite>" + os.urandom(30 * 1024 * 1024).hex().encode()[: 60 * 1024 * 1024]
    response = upload(tenant.client, big, filename="big.xml")
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "PAYLOAD_TOO_LARGE"
    assert body["details"]["limit_bytes"] == 50 * 1024 * 1024
    assert stored(database, tenant.name)["runs"] == 0


def test_chunked_upload_over_limit_is_413(tenant, database):
    """Without a Content-Length the cap is enforced while reading."""
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="repo"\r\n\r\na/b\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="framework"\r\n\r\nx\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="r.xml"\r\n'
        "Content-Type: application/xml\r\n\r\n"
    ).encode()

    def body():
        yield head
        chunk = b"<a/>" * 256 * 1024
        for _ in range(52):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    response = tenant.client.post(
        "/api/test-results",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert stored(database, tenant.name)["runs"] == 0


def _refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "message", "details"}
    assert body["code"] == code
    return body


JUNIT_ONE = b'<testsuite><testcase classname="c" name="t" time="0.1"/></testsuite>'


def ctrf(duration: str) -> bytes:
    return (
        '{"results": {"tool": {"name": "x"}, "summary": {"tests": 1, "passed": 1, "failed": 0,'
        ' "pending": 0, "skipped": 0, "other": 0, "start": 0, "stop": 1}, "tests": [{"name":'
        f' "t", "status": "passed", "duration": {duration}}}]}}}}'
    ).encode()


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (ctrf("1e999999"), "not a finite non-negative number"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (ctrf("1" + "0" * 5000), "invalid JSON"),
        (
            f'<testsuite><testcase file="{"d/" * 1500}t.py" name="t"/></testsuite>'.encode(),
            "file path is longer than",
        ),
    ],
    ids=["infinite-duration", "deep-nesting", "huge-integer", "long-file-path"],
)
def test_reports_no_backend_can_store_alike_are_422(tenant, database, report, reason):
    before = stored(database, tenant.name)
    body = _refused(upload(tenant.client, report), 422, "UNPARSEABLE_REPORT")
    assert reason in body["message"]
    assert stored(database, tenant.name) == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"pr_number": "99999999999999999999"}, "pr_number"),
        ({"pr_number": "٣"}, "pr_number"),  # a digit, but not an ASCII one
        ({"branch": "main\x00evil"}, "branch"),
        ({"environment": "e" * 201}, "environment"),
        ({"repo": "../x"}, "repo"),
        ({"repo": "acme/" + "r" * 300}, "repo"),
    ],
    ids=["huge-pr", "unicode-digit-pr", "nul-in-field", "long-environment", "dot-dot", "long"],
)
def test_form_fields_are_validated_alike_on_every_backend(tenant, database, fields, field):
    before = stored(database, tenant.name)
    body = _refused(upload(tenant.client, JUNIT_ONE, **fields), 400, "INVALID_FIELD")
    assert body["details"]["field"] == field
    assert stored(database, tenant.name) == before


def _many_tests(count: int) -> bytes:
    cases = "".join(f'<testcase classname="c" name="t{i}" time="0.001"/>' for i in range(count))
    return f'<testsuite tests="{count}">{cases}</testsuite>'.encode()


def test_a_truncated_gzip_is_422_and_nothing_is_stored(tenant, database):
    import zlib

    report = _many_tests(1000)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = compressor.compress(report[: len(report) // 4]) + compressor.flush(zlib.Z_SYNC_FLUSH)
    before = stored(database, tenant.name)
    # Cut at a flush point, it inflates cleanly as far as it goes: a quarter of the tests.
    body = _refused(upload(tenant.client, head, filename="r.xml.gz"), 422, "UNPARSEABLE_REPORT")
    assert "truncated" in body["message"]
    assert stored(database, tenant.name) == before


def test_a_multi_member_gzip_is_read_whole(tenant):
    report = _many_tests(300)
    cut = report.index(b"<testcase", len(report) // 2)
    joined = gzip.compress(report[:cut]) + gzip.compress(report[cut:])
    response = upload(tenant.client, joined, filename="r.xml.gz")
    assert response.status_code == 201, response.text
    assert response.json()["tests_processed"] == 300


def test_a_non_ascii_presigned_signature_is_403_not_500(anonymous):
    response = anonymous.put(
        "/api/testDurations/jobs/x/report", params={"expires": "1", "signature": "é"}
    )
    _refused(response, 403, "INVALID_SIGNATURE")


def _retried(tests: int) -> bytes:
    """``tests`` test cases that each failed once, then passed: two results each."""
    case = '<testcase classname="c" name="t{}"><flakyFailure message="m"/></testcase>'
    return ("<testsuite>" + "".join(case.format(n) for n in range(tests)) + "</testsuite>").encode()


@pytest.mark.parametrize(
    "report",
    [
        pytest.param(lambda: _many_tests(200_001), id="test cases, counted before loading"),
        pytest.param(lambda: _retried(100_001), id="retries, counted while parsing"),
    ],
)
def test_a_report_over_the_results_cap_is_413_and_nothing_is_stored(tenant, database, report):
    before = stored(database, tenant.name)
    response = upload(tenant.client, gzip.compress(report()), filename="r.xml.gz")
    body = _refused(response, 413, "TOO_MANY_RESULTS")
    assert body["details"] == {"limit_results": 200_000}
    assert "TESTLENS_MAX_REPORT_RESULTS" in body["message"]
    assert stored(database, tenant.name) == before
