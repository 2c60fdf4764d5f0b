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

This module probes the public tier and the admin tier's operations that
change something; tests/test_probe_reads.py the admin tier's reads, on a
fleet of its own, so that the two run side by side.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.probe import (
    PUBLIC_TARGETS,
    assert_probe_held,
    load_schema,
    operations,
    probe_admin_tier,
    probe_fleet,
    run_probe,
)
from support.procs import Controller

# About 15 s on an idle machine (CPU of the probe, the controller and the
# agents); the timeout leaves room for a busy one.
pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

# Generated requests per operation and mode (negative mode only where there is
# something to break: support/probe.breakable; a handful where only the
# credentials vary: support/probe.budget); a request Hypothesis repeats is sent
# once. The rounds that name a real drone (support/probe.ADMIN_TARGETS) get
# TARGET_EXAMPLES: they are the ones that go past validation to the drone (a
# log channel opened), and at 8 none did. With the coverage cases, about 3,750
# requests on both tiers (both modules). Measured with coverage.py in the
# controller against 15 everywhere (4,500 requests): every operation gave the
# same statuses, and the same lines ran but four that fast tests run (a
# binhost URL with a space: test_binhosts; events and protocol entries after
# an id: test_ws_streams), for 40 % less of the probe's CPU. 30 reached no
# more than 15. bench/probe.py runs the larger budgets.
EXAMPLES = 8
TARGET_EXAMPLES = 15


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    fleet = probe_fleet(tmp_path_factory.mktemp("probe"))
    yield fleet.controller
    fleet.stop()


def test_public_tier_answers_every_generated_request(fleet: Controller) -> None:
    schema = load_schema(fleet.public_url + "/api/v1/openapi.json")
    labels = [op.label for op in operations(schema)]
    report = run_probe(
        schema, fleet.public_url, examples=EXAMPLES, target_examples=TARGET_EXAMPLES, targets=PUBLIC_TARGETS
    )
    assert_probe_held(fleet, report, labels)


def test_admin_tier_answers_every_generated_request_that_changes_something(fleet: Controller) -> None:
    probe_admin_tier(fleet, reads=False, examples=EXAMPLES, target_examples=TARGET_EXAMPLES)
