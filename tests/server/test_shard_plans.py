"""Shard plans keyed by the CI run: one plan for every node of a run, a clear refusal for a
node whose tests differ, and the run's coverage of its plan."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from builders import make_tenant, upload

TESTS = [f"tests/test_m{i % 5}.py::test_{i}" for i in range(40)]


def junit(names: list[str], seconds: float = 0.5) -> bytes:
    cases = "".join(
        f'<testcase classname="tests.{n.split("::")[0][6:-3]}" name="{n.split("::")[1]}" '
        f'file="{n.split("::")[0]}" time="{seconds}"/>'
        for n in names
    )
    return f'<testsuite name="s">{cases}</testsuite>'.encode()


def plan(client, repo: str, tests=TESTS, **fields):
    body = {"repo": repo, "shards": 3, "tests": tests, **fields}
    return client.post("/api/shard-plans", json=body)


def new_repo() -> str:
    return f"acme/plans-{uuid.uuid4().hex[:8]}"


def test_every_request_of_a_run_gets_the_first_plan_despite_uploads_between(tenant):
    repo, key = new_repo(), f"github/{uuid.uuid4().int % 10**9}/unit"
    first = plan(tenant.client, repo, plan_key=key)
    assert first.status_code == 201
    # History arrives between two nodes' requests: it must not change the run's plan.
    slow = junit(TESTS[:5], seconds=30.0)
    assert upload(tenant.client, slow, repo=repo, commit="a" * 40).status_code == 201
    again = plan(tenant.client, repo, tests=list(reversed(TESTS)), plan_key=key)
    assert again.status_code == 200
    assert again.json() == first.json()
    # Without the key, the new history makes another plan.
    fresh = plan(tenant.client, repo)
    assert fresh.status_code == 201
    assert fresh.json()["plan_id"] != first.json()["plan_id"]


def test_a_node_with_other_tests_is_refused_with_the_difference(tenant):
    repo, key = new_repo(), "gitlab/77/unit"
    assert plan(tenant.client, repo, plan_key=key).status_code == 201
    other = [*TESTS[1:], "tests/test_new.py::test_added"]
    refused = plan(tenant.client, repo, tests=other, plan_key=key)
    assert refused.status_code == 409
    body = refused.json()
    assert body["code"] == "PLAN_CONFLICT"
    assert body["details"]["only_here"] == ["tests/test_new.py::test_added"]
    assert body["details"]["only_in_plan"] == [TESTS[0]]
    assert "1 only here" in body["message"] and "1 only in the plan" in body["message"]


def test_shard_count_environment_and_grouping_are_part_of_the_run_identity(tenant):
    repo, key = new_repo(), "circleci/wf-1/test"
    ids = {
        plan(tenant.client, repo, plan_key=key).json()["plan_id"],
        plan(tenant.client, repo, plan_key=key, shards=4).json()["plan_id"],
        plan(tenant.client, repo, plan_key=key, environment="linux-py3.12").json()["plan_id"],
        plan(tenant.client, repo, plan_key=key, group_by="file").json()["plan_id"],
    }
    assert len(ids) == 4


def test_nodes_asking_at_once_get_one_plan(tenant):
    repo, key = new_repo(), "buildkite/b-9/step-1"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: plan(tenant.client, repo, plan_key=key), range(8)))
    assert all(a.status_code in (200, 201) for a in answers)
    assert sum(a.status_code == 201 for a in answers) == 1
    assert len({a.json()["plan_id"] for a in answers}) == 1


def test_a_key_belongs_to_its_tenant(tenant, database, server):
    repo, key = new_repo(), "jenkins/jenkins-shop-12"
    mine = plan(tenant.client, repo, plan_key=key).json()
    other = make_tenant(database, server)
    theirs = plan(other.client, repo, plan_key=key, tests=TESTS[:3])
    assert theirs.status_code == 201
    assert theirs.json()["plan_id"] != mine["plan_id"]
    assert other.client.get(f"/api/shard-plans/{mine['plan_id']}").status_code == 404
    assert other.client.get(f"/api/shard-plans/{mine['plan_id']}/coverage").status_code == 404
    other.client.close()


def test_coverage_lists_the_planned_tests_no_upload_of_the_run_reported(tenant):
    repo, key, run = new_repo(), "github/5/unit", str(uuid.uuid4().int % 10**9)
    made = plan(tenant.client, repo, plan_key=key, workflow_run_id=run).json()
    shards = made["shards"]
    # Nodes 0 and 2 upload; node 1 never does.
    for index in (0, 2):
        response = upload(
            tenant.client,
            junit(shards[index]),
            repo=repo,
            commit="b" * 40,
            workflow_run_id=run,
            shard=f"{index}/3",
        )
        assert response.status_code == 201
        stored = tenant.client.get(f"/api/runs/{response.json()['run_id']}").json()
        assert stored["run"]["shard"] == f"{index}/3"
    # Another CI run's upload of node 1's tests does not count.
    upload(tenant.client, junit(shards[1]), repo=repo, commit="c" * 40, workflow_run_id="other")
    coverage = tenant.client.get(f"/api/shard-plans/{made['plan_id']}/coverage").json()
    assert coverage["tests"] == len(TESTS)
    assert coverage["uploads"] == 2
    assert sorted(coverage["not_run"]) == sorted(shards[1])
    assert coverage["ran"] == len(TESTS) - len(shards[1])
