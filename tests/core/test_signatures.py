"""Failure signatures: masking, error types, frames of every runtime, keys and merging."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from testlens.core.signatures import Signature, group, merge, normalise, signature

# Stack traces as each runtime prints them.
PYTHON = """Traceback (most recent call last):
  File "/home/runner/work/proj/proj/tests/test_api.py", line 12, in test_get
    resp = client.get(url)
  File "/home/runner/work/proj/proj/src/app/client.py", line 40, in get
    return self.session.get(url)
  File "/opt/venv/lib/python3.11/site-packages/requests/sessions.py", line 600, in get
    return self.request("GET", url)
  File "<frozen importlib._bootstrap>", line 1, in _load
requests.exceptions.ConnectionError: HTTPConnectionPool(host='localhost', port=54321)
"""
PYTEST_SHORT = """tests/test_cart.py:14: in test_total
    assert cart.total() == 3
src/shop/cart.py:8: in total
    return sum(self.items)
/usr/lib/python3.11/site-packages/_pytest/python.py:10: in call
    pass
E   TypeError: unsupported operand
"""
PYTEST_LONG = """    def test_fail():
>       assert compute() == 3
E       assert 2 == 3

tests/test_x.py:5: AssertionError"""
JAVA = """java.lang.AssertionError: expected:<1> but was:<2>
\tat org.junit.Assert.fail(Assert.java:89)
\tat com.acme.billing.InvoiceTest.totals(InvoiceTest.java:42)
\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)
\tat app//com.acme.billing.Helper$Inner.lambda$run$0(Helper.java:7)
\tat org.gradle.api.internal.tasks.testing.SuiteTestClassProcessor.run(Suite.java:1)
"""
KOTLIN = "\tat com.acme.ParserTest.parses(ParserTest.kt:12)\n\tat kotlin.io.FilesKt.x(Files.kt:1)"
JAVASCRIPT = """Error: expect(received).toBe(expected)
    at Object.<anonymous> (/home/runner/work/web/web/src/__tests__/cart.test.ts:14:23)
    at processTicksAndRejections (node:internal/process/task_queues:95:5)
    at new Promise (<anonymous>)
    at /home/runner/work/web/web/node_modules/jest-circus/build/utils.js:298:28
    at async Cart.load (file:///home/runner/work/web/web/src/lib/cart.js:3:9)
    at /home/runner/work/web/web/src/lib/util.js:3:9
"""
DOTNET = """System.InvalidOperationException : Sequence contains no elements
   at System.Linq.ThrowHelper.ThrowNoElementsException()
   at Acme.Orders.OrderService.<GetLatest>d__5.MoveNext() in /b/o/src/Orders/OrderService.cs:line 88
--- End of stack trace from previous location ---
   at Acme.Orders.Tests.OrderTests.Latest() in D:\\a\\orders\\orders\\tests\\OrderTests.cs:line 21
   at NUnit.Framework.Internal.Reflect.InvokeMethod(MethodInfo method)
   at Acme.Orders.Tests.Helpers.Build()
"""
GO_PANIC = """panic: runtime error: index out of range [5] with length 3 [recovered]
goroutine 7 [running]:
testing.tRunner.func1.2({0x5f2c40, 0xc000016108})
\t/usr/local/go/src/testing/testing.go:1545 +0x238
panic({0x5f2c40?, 0xc000016108?})
\t/usr/local/go/src/runtime/panic.go:914 +0x21f
example.com/acme/parser.(*Parser).next(...)
\t/home/u/acme/parser/parser.go:42
example.com/acme/parser.TestParse(0xc000007860?)
\t/home/u/acme/parser/parser_test.go:20 +0x25
github.com/stretchr/testify/assert.Fail(...)
\t/home/u/go/pkg/mod/github.com/stretchr/testify@v1.8.4/assert/assertions.go:10
"""
GO_TEST = "    parser_test.go:31: got 2, want 3"
RUBY = """RuntimeError: boom
/home/u/app/lib/widget.rb:10:in `render'
# ./spec/widget_spec.rb:5:in `block (2 levels) in <top (required)>'
/usr/lib/ruby/gems/3.2.0/gems/rspec-core-3.12.2/lib/rspec/core/example.rb:263:in `instance_exec'
/home/u/app/lib/base.rb:3:in 'Base#call'
"""


# --- masking -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("id 550e8400-e29b-41d4-a716-446655440000 gone", "id <uuid> gone"),
        ("at 2024-03-01T12:00:01.123Z", "at <time>"),
        ("on 2024-03-01 12:00:01+02:00 and 2024-03-02", "on <time> and <time>"),
        ("started 09:15:02.5 ended", "started <time> ended"),
        ("object at 0x7f3a2b4c5d60", "object at <hex>"),
        ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8", "commit <hex>"),
        ("token aB3dE5fG7hJ9kL1mN2 invalid", "token <id> invalid"),
        ("listening on port 8123", "listening on port <port>"),
        ("GET http://api.example.com:8080/x", "GET http://api.example.com:<port>/x"),
        ("localhost:54321 closed", "localhost:<port> closed"),
        ("Connection to 10.0.3.7:5432 refused", "Connection to <ip>:<port> refused"),
        ("user_48213 has 3 items", "user_<n> has <n> items"),
        ("took 1.25s", "took <n>s"),
        ("sha256 int64 utf8 stay", "sha256 int64 utf8 stay"),
        ("/tmp/pytest-of-runner/pytest-12/test_a0/out.json missing", "<tmp>/out.json missing"),
        ("/var/folders/x1/abc/T/tmpq1w2e3r4/in.txt", "<tmp>/in.txt"),
        ("C:\\Users\\RUNNER~1\\AppData\\Local\\Temp\\tmp1a\\x.txt gone", "<tmp>/x.txt gone"),
        ("wrote tmpa8x_2k3l", "wrote <tmp>"),
        ("/home/u/tmp/data.csv", "/home/u/tmp/data.csv"),
        ("a  \n\t b", "a b"),
    ],
)
def test_noise_is_masked(raw: str, masked: str) -> None:
    assert normalise(raw) == masked


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("503 Service Unavailable after 3 retries", "503 Service Unavailable after <n> retries"),
        ("404 Not Found", "404 Not Found"),
        ("Request failed with status code 502", "Request failed with status code 502"),
        ("HTTP 429 from upstream", "HTTP 429 from upstream"),
        ("HTTP/1.1 500 Internal Server Error", "HTTP/<n> 500 Internal Server Error"),
        ("where 503 = <Response [503]>.status_code", "where <n> = <Response [503]>.status_code"),
        ("HTTPError: 404 Client Error: Not Found", "HTTPError: 404 Client Error: Not Found"),
        ("status_code == 401", "status_code == 401"),
        # three digits without an HTTP neighbour are just a number
        ("expected 503 items", "expected <n> items"),
    ],
)
def test_http_status_codes_survive(raw: str, masked: str) -> None:
    assert normalise(raw) == masked


def test_long_messages_are_cut() -> None:
    assert len(normalise("word " * 400)) <= 500


# --- error types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "stack", "error_type", "text"),
    [
        ("ValueError: bad input", "", "ValueError", "bad input"),
        ("E   AssertionError: assert 1 == 2", "", "AssertionError", "assert <n> == <n>"),
        (
            "",
            "java.lang.NullPointerException\n\tat a.B.c(B.java:1)",
            "java.lang.NullPointerException",
            "",
        ),
        (
            "org.opentest4j.AssertionFailedError: expected: <1> but was: <2>",
            "",
            "org.opentest4j.AssertionFailedError",
            "expected: <<n>> but was: <<n>>",
        ),
        (
            "System.InvalidOperationException : Sequence contains no elements",
            "",
            "System.InvalidOperationException",
            "Sequence contains no elements",
        ),
        (
            "RSpec::Expectations::ExpectationNotMetError: expected 1",
            "",
            "RSpec::Expectations::ExpectationNotMetError",
            "expected <n>",
        ),
        ("Error: Timeout of 2000ms exceeded.", "", "Error", "Timeout of <n>ms exceeded."),
        (
            "",
            "panic: runtime error: index out of range [5] with length 3",
            "panic",
            "runtime error: index out of range [<n>] with length <n>",
        ),
        ("assert 2 == 3", PYTEST_LONG, "AssertionError", "assert <n> == <n>"),
        ("expected:<1> but was:<2>", "", "", "expected:<<n>> but was:<<n>>"),
    ],
)
def test_the_error_type_is_read_from_the_text(
    message: str, stack: str, error_type: str, text: str
) -> None:
    sig = signature(None, message, stack)
    assert (sig.error_type, sig.message) == (error_type, text)


def test_a_given_type_is_kept_and_not_repeated_in_the_message() -> None:
    given = signature("ValueError", "ValueError: bad input", "")
    derived = signature(None, "ValueError: bad input", "")
    separate = signature("ValueError", "bad input", "")
    assert given == derived == separate
    assert given.message == "bad input"


# --- frames --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "frames"),
    [
        (PYTHON, ("src/app/client.py:get", "tests/test_api.py:test_get")),
        (PYTEST_SHORT, ("src/shop/cart.py:total", "tests/test_cart.py:test_total")),
        (PYTEST_LONG, ("tests/test_x.py:test_fail",)),
        (
            JAVA,
            (
                "com/acme/billing/InvoiceTest.java:InvoiceTest.totals",
                "com/acme/billing/Helper.java:Helper$Inner.lambda$run$0",
            ),
        ),
        (KOTLIN, ("com/acme/ParserTest.kt:ParserTest.parses",)),
        (
            JAVASCRIPT,
            (
                "src/__tests__/cart.test.ts:Object.<anonymous>",
                "src/lib/cart.js:Cart.load",
                "src/lib/util.js",
            ),
        ),
        (
            DOTNET,
            (
                "src/Orders/OrderService.cs:OrderService.GetLatest",
                "tests/OrderTests.cs:OrderTests.Latest",
                "Acme.Orders.Tests.Helpers.Build",
            ),
        ),
        (
            GO_PANIC,
            (
                "acme/parser/parser.go:parser.(*Parser).next",
                "acme/parser/parser_test.go:parser.TestParse",
            ),
        ),
        (GO_TEST, ("parser_test.go",)),
        (
            RUBY,
            (
                "app/lib/widget.rb:render",
                "spec/widget_spec.rb:<top (required)>",
                "app/lib/base.rb:Base#call",
            ),
        ),
        ("no frames here", ()),
    ],
)
def test_in_app_frames_innermost_first_without_line_numbers(
    stack: str, frames: tuple[str, ...]
) -> None:
    assert signature(None, None, stack).frames == frames


def test_at_most_five_frames_and_no_immediate_repeats() -> None:
    recursion = "".join(f"    at step (/w/src/a.js:{i}:1)\n" for i in range(3))
    deep = recursion + "".join(f"    at f{i} (/w/src/b.js:{i}:1)\n" for i in range(10))
    assert signature(None, None, deep).frames == (
        "src/a.js:step",
        "src/b.js:f0",
        "src/b.js:f1",
        "src/b.js:f2",
        "src/b.js:f3",
    )


def test_frames_do_not_depend_on_the_checkout_directory() -> None:
    here = JAVASCRIPT
    there = here.replace("/home/runner/work/web/web/", "/builds/acme/web/")
    assert signature(None, None, here) == signature(None, None, there)


# --- keys ----------------------------------------------------------------------------------

RUN_1 = (
    "ConnectionError",
    "Could not reach http://127.0.0.1:41234/api at 2024-05-01T10:00:00Z "
    "(request 0b0e2c4e-1111-4a1a-9f00-0123456789ab, file /tmp/pytest-of-ci/pytest-7/t0/in.json)",
    PYTHON,
)
RUN_2 = (
    "ConnectionError",
    "Could not reach http://127.0.0.1:50007/api at 2024-06-11T22:31:09Z "
    "(request 9a7e0f32-2222-4b2b-8e11-fedcba987654, file /tmp/pytest-of-ci/pytest-93/t0/in.json)",
    PYTHON.replace("line 12", "line 19").replace("line 40", "line 41"),
)


def test_two_runs_of_one_failure_give_one_key() -> None:
    first, second = signature(*RUN_1), signature(*RUN_2)
    assert first == second
    assert len(first.key) == 32 and first.key == first.key.lower()
    int(first.key, 16)


def test_a_different_failure_gives_another_key() -> None:
    base = signature(*RUN_1)
    assert signature("TimeoutError", RUN_1[1], RUN_1[2]).key != base.key
    assert signature(RUN_1[0], "Could not parse the answer", RUN_1[2]).key != base.key
    assert signature(RUN_1[0], RUN_1[1], JAVA).key != base.key
    assert signature("HTTPError", "503 Service Unavailable", "").key != (
        signature("HTTPError", "502 Service Unavailable", "").key
    )


def test_the_key_is_the_same_in_another_process() -> None:
    code = (
        "from testlens.core.signatures import signature; import sys; "
        "print(signature(sys.argv[1], sys.argv[2], sys.argv[3]).key)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, *RUN_1], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == signature(*RUN_1).key


# --- merging -------------------------------------------------------------------------------


def sig(error_type: str, message: str, frames: tuple[str, ...] = ("src/a.py:f",)) -> Signature:
    key = hashlib.md5(repr((error_type, message, frames)).encode()).hexdigest()
    return Signature(key, error_type, message, frames)


def test_near_identical_signatures_merge_under_the_most_frequent() -> None:
    a = sig("KeyError", "missing key 'user' in payload from worker alpha")
    b = sig("KeyError", "missing key 'user' in payload from worker beta")
    c = sig("ValueError", "missing key 'user' in payload from worker alpha")
    d = sig("KeyError", "missing key 'user' in payload from worker alpha", ("src/b.py:g",))
    merged = merge([(a, 2), (b, 5), (c, 1), (d, 1), (b, 1)])
    assert merged[0] == (b, 8)
    assert sorted(merged[1:], key=lambda g: g[0].error_type) == [(d, 1), (c, 1)]


def test_a_signature_without_frames_merges_with_one_that_has_them() -> None:
    framed = sig("KeyError", "missing key 'user'")
    bare = sig("KeyError", "missing key 'user'", ())
    assert merge([(framed, 1), (bare, 3)]) == [(bare, 4)]


def test_merge_does_not_depend_on_input_order() -> None:
    counts = [("one", 2), ("two", 2), ("three", 1)]
    items = [(sig("E", f"failure number {w} in the shared fixture"), n) for w, n in counts]
    assert merge(items) == merge(list(reversed(items)))
    assert sum(count for _, count in merge(items)) == 5


def test_different_messages_stay_apart() -> None:
    a, b = sig("E", "connection refused by the database"), sig("E", "disk quota exceeded")
    assert merge([(a, 1), (b, 1)]) == sorted([(a, 1), (b, 1)], key=lambda g: g[0].key)


def test_groups_list_their_members_most_frequent_first() -> None:
    a = sig("KeyError", "missing key 'user' in payload from worker alpha")
    b = sig("KeyError", "missing key 'user' in payload from worker beta")
    c = sig("ValueError", "bad value")
    assert group([(a, 2), (c, 1), (b, 5), (a, 1)]) == [[(b, 5), (a, 3)], [(c, 1)]]
