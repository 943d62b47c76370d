"""Concurrent uploads to one repository: every run counts, none fails, no state is lost."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from builders import junit, upload


def test_concurrent_uploads_of_the_same_tests_all_count(tenant):
    cases = {f"test_{i}": ["pass"] for i in range(200)}
    cases["test_flaky"] = ["fail", "pass"]
    report = junit(cases)

    def send(n: int):
        return upload(tenant.client, report, repo="acme/busy", commit=f"{n:040x}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, range(16)))
    assert [r.status_code for r in responses] == [201] * 16, [r.text for r in responses]
    repo_id = tenant.client.get("/api/repos").json()["repos"][0]["id"]
    tests = tenant.client.get(f"/api/repos/{repo_id}").json()["tests"]
    assert len(tests) == 100  # first page
    flaky = next(t for t in tests if t["name"] == "test_flaky")
    detail = tenant.client.get(f"/api/tests/{flaky['id']}").json()
    # Every run folded into the state: none lost to a concurrent read-modify-write.
    assert detail["total_runs"] == 16
    assert detail["flaky_runs"] == 16
