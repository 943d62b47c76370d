"""The guard rails on proposed fixes: diffs that only wait, retry, allow more time or ask less
are refused, each for its reason; genuine fixes pass; and diffs apply exactly to the files
they were made for. The diffs are made the way git makes them, from a file before and after
the change, in the languages the fixes arrive in."""

from __future__ import annotations

import difflib
import textwrap

import pytest

from testlens.core.fix_proposals import REASONS, apply_diff, check, suggestion_for


def diff(path: str, before: str, after: str) -> str:
    """What ``git diff`` shows for ``path`` changed from ``before`` to ``after``."""
    before, after = textwrap.dedent(before), textwrap.dedent(after)
    body = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        f"a/{path}",
        f"b/{path}",
        n=3,
    )
    return f"diff --git a/{path} b/{path}\nindex 3f2a1c4..9be07d1 100644\n" + "".join(body)


PY_TEST = """\
import json

from shop.cart import Cart


def test_checkout_total(client):
    cart = Cart(client)
    cart.add("apple", 3)
    response = cart.checkout()
    assert response.status_code == 200
    assert response.json()["total"] == 4.5
"""


def replaced(old: str, new: str, text: str = PY_TEST, path: str = "tests/test_cart.py") -> str:
    assert old in text
    return diff(path, text, text.replace(old, new))


def refused(diff_text: str, *reasons: str) -> None:
    verdict = check(diff_text)
    assert not verdict.allowed, diff_text
    assert set(reasons) <= set(verdict.reasons), verdict.reasons


def allowed(diff_text: str, *warnings: str) -> None:
    verdict = check(diff_text)
    assert verdict.allowed, (verdict.reasons, diff_text)
    assert verdict.reasons == warnings


# Sleeps


def test_a_sleep_before_the_assertion_is_refused():
    text = PY_TEST.replace("import json\n", "import json\nimport time\n").replace(
        "    response = cart.checkout()\n",
        "    time.sleep(2)  # let the stock service catch up\n    response = cart.checkout()\n",
    )
    refused(diff("tests/test_cart.py", PY_TEST, text), "sleep")


@pytest.mark.parametrize(
    "old, new",
    [
        ("    time.sleep(0.5)\n", "    time.sleep(5)\n"),
        ("    time.sleep(0.5)\n", "    await asyncio.sleep(3)\n"),
        ("    time.sleep(0.5)\n", "    sleep(2)\n"),
    ],
)
def test_a_longer_or_added_python_sleep_is_refused(old, new):
    before = PY_TEST.replace(
        "    response = cart.checkout()\n", "    time.sleep(0.5)\n    response = cart.checkout()\n"
    )
    refused(replaced(old, new, before), "sleep")


def test_a_shorter_sleep_is_no_sleep_added():
    before = PY_TEST.replace(
        "    response = cart.checkout()\n", "    time.sleep(5)\n    response = cart.checkout()\n"
    )
    allowed(replaced("time.sleep(5)", "time.sleep(0.1)", before))


JS_TEST = """\
import { test, expect } from '@playwright/test';

test('saves the profile', async ({ page }) => {
  await page.goto('/profile');
  await page.getByLabel('Name').fill('Ada');
  await page.getByRole('button', { name: 'Save' }).click();
  await expect(page.getByText('Saved')).toBeVisible();
  expect(await page.title()).toBe('Profile');
});
"""


@pytest.mark.parametrize(
    "added",
    [
        "  await page.waitForTimeout(3000);\n",
        "  await new Promise((resolve) => setTimeout(resolve, 500));\n",
        "  cy.wait(2000);\n",
        "  await browser.pause(1000);\n",
        "  await sleep(250);\n",
    ],
)
def test_javascript_fixed_waits_are_refused(added):
    anchor = "  await expect(page.getByText('Saved')).toBeVisible();\n"
    refused(
        replaced(anchor, added + anchor, JS_TEST, "e2e/profile.spec.ts"),
        "sleep",
    )


JAVA_TEST = """\
package com.acme.orders;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class OrderQueueTest {
    @Test
    void processesTheOrder() {
        OrderQueue queue = new OrderQueue();
        queue.submit(new Order("A-1"));
        assertEquals("done", queue.status("A-1"));
    }
}
"""


def test_a_java_thread_sleep_is_refused():
    anchor = '        assertEquals("done", queue.status("A-1"));\n'
    refused(
        replaced(
            anchor,
            "        Thread.sleep(1000);\n" + anchor,
            JAVA_TEST,
            "src/test/java/com/acme/orders/OrderQueueTest.java",
        ),
        "sleep",
    )


def test_a_shell_sleep_is_refused():
    script = "#!/bin/sh\nset -e\n./start-server.sh &\ncurl -fsS http://127.0.0.1:8080/health\n"
    refused(
        replaced("curl -fsS", "sleep 5\ncurl -fsS", script, "scripts/smoke_test.sh"),
        "sleep",
    )


def test_a_sleep_next_to_a_real_change_is_allowed_with_a_warning():
    text = PY_TEST.replace(
        '    cart.add("apple", 3)\n',
        '    cart.add("apple", 3)\n    cart.wait_until_priced()\n    time.sleep(1)\n',
    )
    allowed(diff("tests/test_cart.py", PY_TEST, text), "sleep")


# Retries


@pytest.mark.parametrize(
    "decorator",
    [
        "@pytest.mark.flaky(reruns=3)\n",
        "@flaky(max_runs=3, min_passes=1)\n",
        "@pytest.mark.flaky(reruns=2, reruns_delay=1)\n",
    ],
)
def test_a_rerun_decorator_is_refused(decorator):
    anchor = "def test_checkout_total(client):\n"
    refused(replaced(anchor, decorator + anchor), "retry")


def test_a_retry_loop_around_the_assertion_is_refused():
    old = '    assert response.json()["total"] == 4.5\n'
    new = (
        "    for attempt in range(3):\n"
        "        try:\n"
        '            assert response.json()["total"] == 4.5\n'
        "            break\n"
        "        except AssertionError:\n"
        "            if attempt == 2:\n"
        "                raise\n"
        "            response = cart.checkout()\n"
        "            time.sleep(1)\n"
    )
    verdict = check(replaced(old, new))
    # The loop re-runs the checkout: that line is the retry's, but it is real code, so the
    # guard cannot prove it evasive and lets a reviewer decide with both warnings.
    assert set(verdict.reasons) >= {"retry", "sleep"}
    without_refetch = new.replace("            response = cart.checkout()\n", "")
    refused(replaced(old, without_refetch), "retry", "sleep")


def test_a_javascript_retry_loop_is_refused():
    spec = "test('ready', async () => {\n  expect(await getStatus()).toBe('ready');\n});\n"
    loop = (
        "  for (let i = 0; i < 3; i++) {\n"
        "    try {\n"
        "      expect(await getStatus()).toBe('ready');\n"
        "      break;\n"
        "    } catch (e) {\n"
        "      if (i === 2) throw e;\n"
        "    }\n"
        "  }\n"
    )
    refused(
        replaced("  expect(await getStatus()).toBe('ready');\n", loop, spec, "src/status.test.ts"),
        "retry",
    )


def test_a_loop_checking_several_items_is_no_retry():
    unit = "def test_numbers():\n    assert results() == [1, 2, 3]\n"
    allowed(
        replaced(
            "    assert results() == [1, 2, 3]\n",
            "    values = results()\n    for i in range(3):\n        assert values[i] == i + 1\n",
            unit,
            "tests/test_numbers.py",
        )
    )


@pytest.mark.parametrize(
    "added",
    [
        "jest.retryTimes(3);\n",
        "test.describe.configure({ retries: 2 });\n",
    ],
)
def test_javascript_retries_are_refused(added):
    anchor = "test('saves the profile'"
    refused(replaced(anchor, added + "\n" + anchor, JS_TEST, "e2e/profile.spec.ts"), "retry")


def test_a_mocha_retry_is_refused():
    mocha = (
        "describe('cart', function () {\n"
        "  it('totals', function () {\n"
        "    expect(total()).to.equal(3);\n"
        "  });\n"
        "});\n"
    )
    refused(
        replaced("  it('totals'", "  this.retries(3);\n  it('totals'", mocha, "test/cart.test.js"),
        "retry",
    )


@pytest.mark.parametrize("annotation", ["@RepeatedTest(5)", "@RetryingTest(3)", "@Retry(3)"])
def test_java_retry_annotations_are_refused(annotation):
    refused(
        replaced(
            "    @Test\n",
            f"    {annotation}\n",
            JAVA_TEST,
            "src/test/java/com/acme/orders/OrderQueueTest.java",
        ),
        "retry",
    )


def test_raising_the_retry_count_in_a_config_is_refused():
    config = "export default defineConfig({\n  retries: 1,\n  workers: 4,\n});\n"
    refused(replaced("retries: 1", "retries: 3", config, "playwright.config.ts"), "retry")


# Timeouts


def test_a_raised_timeout_argument_is_refused():
    text = PY_TEST.replace(
        "    response = cart.checkout()\n", "    response = cart.checkout(timeout=5)\n"
    )
    refused(replaced("timeout=5", "timeout=30", text), "longer_timeout")


def test_a_lowered_timeout_is_a_real_change():
    text = PY_TEST.replace(
        "    response = cart.checkout()\n", "    response = cart.checkout(timeout=30)\n"
    )
    allowed(replaced("timeout=30", "timeout=5", text))


def test_a_pytest_timeout_marker_is_refused():
    anchor = "def test_checkout_total(client):\n"
    refused(replaced(anchor, "@pytest.mark.timeout(120)\n" + anchor), "longer_timeout")


@pytest.mark.parametrize(
    "old, new",
    [
        (
            "  await expect(page.getByText('Saved')).toBeVisible();\n",
            "  await expect(page.getByText('Saved')).toBeVisible({ timeout: 15000 });\n",
        ),
        ("});\n", "}, 30000);\n"),
        (
            "import { test, expect } from '@playwright/test';\n",
            "import { test, expect } from '@playwright/test';\n\njest.setTimeout(30000);\n",
        ),
    ],
)
def test_javascript_longer_timeouts_are_refused(old, new):
    refused(replaced(old, new, JS_TEST, "e2e/profile.spec.ts"), "longer_timeout")


def test_a_mocha_timeout_is_refused():
    mocha = (
        "describe('sync', function () {\n"
        "  it('uploads', async function () {\n"
        "    await upload();\n"
        "  });\n"
        "});\n"
    )
    refused(
        replaced(
            "    await upload();\n",
            "    this.timeout(20000);\n    await upload();\n",
            mocha,
            "test/sync.test.js",
        ),
        "longer_timeout",
    )


@pytest.mark.parametrize(
    "old, new",
    [
        ("    @Test\n", "    @Test\n    @Timeout(30)\n"),
        ("    @Test\n", "    @Test(timeout = 5000)\n"),
    ],
)
def test_java_timeouts_are_refused(old, new):
    refused(
        replaced(old, new, JAVA_TEST, "src/test/java/com/acme/orders/OrderQueueTest.java"),
        "longer_timeout",
    )


def test_raising_a_junit4_timeout_is_refused():
    junit4 = JAVA_TEST.replace("    @Test\n", "    @Test(timeout = 1000)\n")
    refused(
        replaced("timeout = 1000", "timeout = 10000", junit4, "src/test/java/OrderQueueTest.java"),
        "longer_timeout",
    )


# Weaker assertions


def test_an_exact_assertion_made_looser_is_refused():
    refused(
        replaced(
            '    assert response.json()["total"] == 4.5\n',
            '    assert "total" in response.json()\n',
        ),
        "looser_assertion",
    )
    refused(
        replaced(
            '    assert response.json()["total"] == 4.5\n', '    assert response.json()["total"]\n'
        ),
        "looser_assertion",
    )


def test_unittest_assert_equal_made_assert_in_is_refused():
    unit = (
        "import unittest\n\n\nclass TagsTest(unittest.TestCase):\n"
        "    def test_tags(self):\n"
        "        self.assertEqual(load_tags(), ['a', 'b'])\n"
    )
    refused(
        replaced(
            "        self.assertEqual(load_tags(), ['a', 'b'])\n",
            "        self.assertIn('a', load_tags())\n",
            unit,
            "tests/test_tags.py",
        ),
        "looser_assertion",
    )


def test_javascript_to_equal_made_to_contain_is_refused():
    spec = "test('lists items', () => {\n  expect(listItems()).toEqual(['a', 'b']);\n});\n"
    refused(
        replaced("toEqual(['a', 'b'])", "toContain('a')", spec, "src/items.test.ts"),
        "looser_assertion",
    )
    refused(
        replaced(
            "expect(listItems()).toEqual(['a', 'b'])",
            "expect(listItems()).toBeTruthy()",
            spec,
            "src/items.test.ts",
        ),
        "looser_assertion",
    )


def test_java_assert_equals_made_assert_not_null_is_refused():
    refused(
        replaced(
            'assertEquals("done", queue.status("A-1"));',
            'assertNotNull(queue.status("A-1"));',
            JAVA_TEST,
            "src/test/java/com/acme/orders/OrderQueueTest.java",
        ),
        "looser_assertion",
    )


def test_a_removed_or_commented_out_assertion_is_refused():
    line = '    assert response.json()["total"] == 4.5\n'
    refused(replaced(line, ""), "removed_assertion")
    refused(replaced(line, "    # " + line.lstrip()), "removed_assertion")
    refused(
        replaced(
            "  expect(await page.title()).toBe('Profile');\n", "", JS_TEST, "e2e/profile.spec.ts"
        ),
        "removed_assertion",
    )


@pytest.mark.parametrize(
    "old, new",
    [
        ("pytest.approx(4.5, rel=1e-6)", "pytest.approx(4.5, rel=1e-2)"),
        ("pytest.approx(4.5, rel=1e-6)", "pytest.approx(4.5, rel=1e-6, abs=0.5)"),
        ("pytest.approx(4.5)", "pytest.approx(4.5, abs=0.1)"),
    ],
)
def test_a_widened_python_tolerance_is_refused(old, new):
    text = PY_TEST.replace("== 4.5\n", f"== {old}\n")
    refused(replaced(old, new, text), "wider_tolerance")


def test_fewer_places_in_assert_almost_equal_is_a_wider_tolerance():
    unit = (
        "class T(unittest.TestCase):\n"
        "    def test_mean(self):\n"
        "        self.assertAlmostEqual(mean(xs), 0.3, places=7)\n"
    )
    refused(replaced("places=7", "places=2", unit, "tests/test_stats.py"), "wider_tolerance")
    allowed(replaced("places=7", "places=9", unit, "tests/test_stats.py"))


def test_fewer_digits_in_to_be_close_to_is_a_wider_tolerance():
    spec = "test('sum', () => {\n  expect(sum(0.1, 0.2)).toBeCloseTo(0.3, 5);\n});\n"
    refused(replaced("0.3, 5)", "0.3, 1)", spec, "src/sum.test.ts"), "wider_tolerance")


def test_a_larger_java_delta_is_a_wider_tolerance():
    java = (
        "class MeanTest {\n"
        "    @Test\n"
        "    void mean() {\n"
        "        assertThat(mean(xs)).isCloseTo(0.3, within(0.0001));\n"
        "    }\n"
        "}\n"
    )
    refused(
        replaced("within(0.0001)", "within(0.5)", java, "src/test/java/MeanTest.java"),
        "wider_tolerance",
    )


@pytest.mark.parametrize(
    "marker",
    [
        "@pytest.mark.skip(reason='flaky')\n",
        "@pytest.mark.xfail(strict=False)\n",
        "@pytest.mark.skipif(sys.platform == 'win32', reason='flaky')\n",
    ],
)
def test_python_skip_markers_are_refused(marker):
    anchor = "def test_checkout_total(client):\n"
    refused(replaced(anchor, marker + anchor), "skip_marker")


@pytest.mark.parametrize("runner", ["test.skip(", "test.only(", "test.fixme("])
def test_javascript_skip_and_only_are_refused(runner):
    refused(replaced("test(", runner, JS_TEST, "e2e/profile.spec.ts"), "skip_marker")


def test_java_disabled_is_refused():
    refused(
        replaced(
            "    @Test\n",
            '    @Test\n    @Disabled("flaky on CI")\n',
            JAVA_TEST,
            "src/test/java/com/acme/orders/OrderQueueTest.java",
        ),
        "skip_marker",
    )


# Genuine fixes


def test_sorting_before_comparing_is_allowed():
    unit = "def test_tags():\n    assert load_tags() == ['a', 'b']\n"
    allowed(
        replaced("assert load_tags()", "assert sorted(load_tags())", unit, "tests/test_tags.py")
    )


def test_comparing_without_order_is_allowed():
    unit = (
        "class T(unittest.TestCase):\n"
        "    def test_tags(self):\n"
        "        self.assertEqual(load_tags(), ['a', 'b'])\n"
    )
    allowed(replaced("assertEqual(", "assertCountEqual(", unit, "tests/test_tags.py"))


def test_awaiting_a_condition_instead_of_a_sleep_is_allowed():
    before = PY_TEST.replace(
        "    response = cart.checkout()\n", "    time.sleep(2)\n    response = cart.checkout()\n"
    )
    allowed(
        replaced(
            "    time.sleep(2)\n",
            "    wait_until(lambda: cart.priced, timeout=10)\n",
            before,
        )
    )


def test_a_playwright_web_first_assertion_instead_of_a_wait_is_allowed():
    before = JS_TEST.replace(
        "  await expect(page.getByText('Saved')).toBeVisible();\n",
        "  await page.waitForTimeout(2000);\n",
    )
    allowed(
        replaced(
            "  await page.waitForTimeout(2000);\n",
            "  await expect(page.getByText('Saved')).toBeVisible();\n",
            before,
            "e2e/profile.spec.ts",
        )
    )


def test_a_cypress_wait_on_a_request_alias_is_allowed():
    spec = (
        "it('loads users', () => {\n"
        "  cy.visit('/users');\n"
        "  cy.wait(2000);\n"
        "  cy.get('li').should('have.length', 3);\n"
        "});\n"
    )
    allowed(
        replaced(
            "  cy.visit('/users');\n  cy.wait(2000);\n",
            "  cy.intercept('GET', '/api/users').as('users');\n"
            "  cy.visit('/users');\n"
            "  cy.wait('@users');\n",
            spec,
            "cypress/e2e/users.cy.js",
        )
    )


def test_an_awaitility_condition_instead_of_thread_sleep_is_allowed():
    before = JAVA_TEST.replace(
        '        assertEquals("done"', '        Thread.sleep(500);\n        assertEquals("done"'
    )
    allowed(
        replaced(
            "        Thread.sleep(500);\n",
            '        await().atMost(5, SECONDS).until(() -> queue.status("A-1").equals("done"));\n',
            before,
            "src/test/java/com/acme/orders/OrderQueueTest.java",
        )
    )


def test_a_fixed_seed_is_allowed():
    unit = (
        "def test_shuffle_keeps_items():\n"
        "    items = shuffle(list(range(10)))\n"
        "    assert items[0] != 0\n"
    )
    allowed(
        replaced(
            "    items = shuffle(list(range(10)))\n",
            "    rng = random.Random(1234)\n    items = shuffle(list(range(10)), rng=rng)\n",
            unit,
            "tests/test_shuffle.py",
        )
    )


def test_closing_a_resource_is_allowed():
    unit = (
        "def test_reads_config(tmp_path):\n"
        "    handle = open(tmp_path / 'app.toml')\n"
        "    config = parse(handle.read())\n"
        "    assert config['port'] == 8080\n"
    )
    allowed(
        replaced(
            "    handle = open(tmp_path / 'app.toml')\n    config = parse(handle.read())\n",
            "    with open(tmp_path / 'app.toml') as handle:\n"
            "        config = parse(handle.read())\n",
            unit,
            "tests/test_config.py",
        )
    )


def test_a_floating_point_comparison_made_approximate_is_allowed():
    allowed(replaced("== 4.5\n", "== pytest.approx(4.5)\n"))


def test_a_deterministic_map_in_java_is_allowed():
    java = (
        "class ReportTest {\n"
        "    @Test\n"
        "    void renders() {\n"
        "        Map<String, Integer> counts = new HashMap<>();\n"
        '        assertEquals("a=1,b=2", render(counts));\n'
        "    }\n"
        "}\n"
    )
    allowed(replaced("new HashMap<>()", "new TreeMap<>()", java, "src/test/java/ReportTest.java"))


# What is not a fix


def test_a_diff_of_comments_and_imports_only_changes_nothing():
    text = PY_TEST.replace("import json\n", "import json\nimport time\n").replace(
        "    cart = Cart(client)\n",
        "    # the cart prices asynchronously\n    cart = Cart(client)\n",
    )
    refused(diff("tests/test_cart.py", PY_TEST, text), "no_change")


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "Add a sleep before the assertion.",
        "--- a/tests/test_cart.py\n(no hunks)\n",
        "@@ -1,2 +1,2 @@\n-a\n+b\n",
    ],
)
def test_what_is_not_a_unified_diff_is_refused(answer):
    assert check(answer).reasons == ("not_a_diff",)
    assert not check(answer).allowed


def test_every_reason_is_described():
    assert set(REASONS) == {
        "not_a_diff",
        "no_change",
        "sleep",
        "retry",
        "longer_timeout",
        "removed_assertion",
        "looser_assertion",
        "wider_tolerance",
        "skip_marker",
    }


@pytest.mark.parametrize(
    "category, suggestion",
    [
        ("unknown", "quarantine"),
        ("infrastructure", "quarantine"),
        (None, "quarantine"),
        ("race_condition", "pull_request"),
        ("unordered_collection", "pull_request"),
        ("async_wait", "pull_request"),
    ],
)
def test_suggestion_for_a_category(category, suggestion):
    assert suggestion_for(category) == suggestion


# Applying diffs


def test_a_diff_applies_to_the_file_it_was_made_for():
    after = PY_TEST.replace("== 4.5", "== pytest.approx(4.5)").replace(
        "import json\n", "import json\n\nimport pytest\n"
    )
    change = diff("tests/test_cart.py", PY_TEST, after)
    assert apply_diff(change, {"tests/test_cart.py": PY_TEST}) == {"tests/test_cart.py": after}


def test_several_hunks_and_files_apply():
    long = "".join(f"line {n}\n" for n in range(1, 41))
    after = long.replace("line 3\n", "line three\n").replace("line 35\n", "line thirty-five\n")
    change = diff("a.txt", long, after) + diff("b.py", "x = 1\n", "x = 2\n")
    assert "@@ -32," in change  # two hunks in a.txt
    assert apply_diff(change, {"a.txt": long, "b.py": "x = 1\n"}) == {
        "a.txt": after,
        "b.py": "x = 2\n",
    }


def test_wrong_hunk_counts_and_line_numbers_are_tolerated():
    change = (
        "--- a/tests/test_cart.py\n+++ b/tests/test_cart.py\n"
        "@@ -40,9 +40,9 @@ def test_checkout_total(client):\n"
        "     response = cart.checkout()\n"
        "     assert response.status_code == 200\n"
        '-    assert response.json()["total"] == 4.5\n'
        '+    assert response.json()["total"] == pytest.approx(4.5)\n'
    )
    patched = apply_diff(change, {"tests/test_cart.py": PY_TEST})
    assert patched["tests/test_cart.py"] == PY_TEST.replace("== 4.5", "== pytest.approx(4.5)")


def test_line_endings_and_a_missing_final_newline_are_kept():
    source = "a = 1\r\nb = 2\r\nc = 3"
    change = (
        "--- a/m.py\n"
        "+++ b/m.py\n"
        "@@ -1,3 +1,3 @@\n"
        " a = 1\n"
        "-b = 2\n"
        "+b = 20\n"
        " c = 3\n"
        "\\ No newline at end of file\n"
    )
    assert apply_diff(change, {"m.py": source}) == {"m.py": "a = 1\r\nb = 20\r\nc = 3"}


@pytest.mark.parametrize(
    "change, message",
    [
        (diff("src/shop/cart.py", "x = 1\n", "x = 2\n"), "not one of the given files"),
        ("--- /dev/null\n+++ b/tests/helpers.py\n@@ -0,0 +1 @@\n+x = 1\n", "only modify"),
        ("--- a/tests/test_cart.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-import json\n", "only modify"),
        (
            "--- a/tests/test_cart.py\n"
            "+++ b/tests/test_basket.py\n"
            "@@ -1 +1 @@\n"
            "-import json\n"
            "+import os\n",
            "only modify",
        ),
        (
            "--- a/tests/test_cart.py\n+++ b/tests/test_cart.py\n@@ -5,2 +5,2 @@\n"
            " def test_checkout_total(client):\n"
            "-    cart = Cart(session)\n"
            "+    cart = Cart(client, seed=1)\n",
            "does not fit",
        ),
        ("Sorry, I cannot help with that.", "no file header"),
    ],
)
def test_a_diff_that_does_not_fit_the_given_files_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        apply_diff(change, {"tests/test_cart.py": PY_TEST})
