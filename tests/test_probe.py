"""An outside probe in CI (issue 13, item 9): schemathesis against both web
tiers of a live controller with two enrolled agents, driven by the OpenAPI
documents the controller itself serves.

Every operation gets schemathesis's coverage cases (a fixed list: boundary
values, missing or wrongly typed parameters, other methods), then
``EXAMPLES`` generated requests in positive mode (values the schema
allows) and, where the document constrains something, as many in negative
mode (values it forbids), from a fixed seed (tests/support/probe.py);
operations on a drone get a second round naming a real one. A 5xx, an
answer that its documentation does not describe or no answer at all fails
the test with the request that showed it; so does a traceback in the
controller's log, a controller that died or a drone that went offline
under the probe. bench/probe.py runs the same probe with a larger budget
and prints what it saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.probe import (
    ADMIN_EXCLUDED,
    ADMIN_TARGETS,
    DRONES,
    PUBLIC_TARGETS,
    ProbeReport,
    excluding,
    load_schema,
    operations,
    probe_fleet,
    run_probe,
)
from support.procs import Controller

# About 25 s on an idle machine (CPU of the probe, the controller and the
# agents); the timeout leaves room for a busy one.
pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

# Generated requests per operation and mode (negative mode only where there is
# something to break: support/probe.breakable). With the coverage cases, about
# 440 requests on the public tier and 3,100 on the admin tier.
EXAMPLES = 30


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    fleet = probe_fleet(tmp_path_factory.mktemp("probe"))
    yield fleet.controller
    fleet.stop()


def assert_probe_held(controller: Controller, report: ProbeReport, operations_probed: list[str]) -> None:
    reached = {label for label, _ in report.statuses}
    assert reached == set(operations_probed), f"no request reached {set(operations_probed) - reached}"
    assert not report.findings, (
        f"{len(report.findings)} of {report.requests} probe requests failed a check:\n"
        + report.describe_findings()
    )
    assert controller.alive(), "the controller died under the probe"
    assert "Traceback" not in controller.log(), controller.log()[-4000:]
    for name in DRONES:
        node = controller.node(name)
        assert node is not None and node["status"] == "online", f"{name} after the probe: {node}"


def test_public_tier_answers_every_generated_request(fleet: Controller) -> None:
    schema = load_schema(fleet.public_url + "/api/v1/openapi.json")
    labels = [op.label for op in operations(schema)]
    report = run_probe(schema, fleet.public_url, examples=EXAMPLES, targets=PUBLIC_TARGETS)
    assert_probe_held(fleet, report, labels)


def test_admin_tier_answers_every_generated_request(fleet: Controller) -> None:
    key = {"X-Admin-Key": fleet.admin_key}
    full = load_schema(fleet.admin_url + "/admin/api/openapi.json", key)
    everything = {op.label for op in operations(full)}
    excluded = {f"{method} {path}" for method, path in ADMIN_EXCLUDED}
    # A renamed route must not slip back into the probe unnoticed.
    assert excluded <= everything, f"excluded operations the document lacks: {excluded - everything}"
    schema = excluding(full, ADMIN_EXCLUDED)
    labels = [op.label for op in operations(schema)]
    assert set(labels) == everything - excluded
    report = run_probe(schema, fleet.admin_url, examples=EXAMPLES, headers=key, targets=ADMIN_TARGETS)
    assert_probe_held(fleet, report, labels)
    # The probe stayed authenticated throughout: its own key never got a 401 or 429
    # outside the login call, where generated keys are wrong by design.
    refused = {
        (label, status)
        for (label, status), _ in report.statuses.items()
        if status in (401, 429) and label != "POST /admin/api/login"
    }
    assert not refused, refused
