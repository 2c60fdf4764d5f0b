"""The outside probe of tests/test_probe.py on the admin tier's reads (its
GET operations, websockets included), on a fleet of its own: side by side
with test_probe.py (xdist keeps a module on one worker), the admin tier's
probe takes half as long.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_probe import EXAMPLES, TARGET_EXAMPLES

from support.probe import probe_admin_tier, probe_fleet
from support.procs import Controller

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    fleet = probe_fleet(tmp_path_factory.mktemp("probe-reads"))
    yield fleet.controller
    fleet.stop()


def test_admin_tier_answers_every_generated_read(fleet: Controller) -> None:
    probe_admin_tier(fleet, reads=True, examples=EXAMPLES, target_examples=TARGET_EXAMPLES)
