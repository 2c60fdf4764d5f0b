"""The shutdown stages of both daemons fit the OpenRC stop budget of their
init scripts (retry="TERM/N/KILL/M"): a clean stop is never cut off by
KILL. The services themselves under real OpenRC: test_openrc.py."""

from __future__ import annotations

import re
from pathlib import Path

from swarm.agent.main import FLUSH_TIMEOUT, STOP_TIMEOUT
from swarm.controller import app

from support.openrc import FILES  # the packaged init scripts


def retry_budget(initd: Path) -> float:
    """Seconds between TERM and KILL in an init script's retry schedule."""
    match = re.search(r'^retry="TERM/(\d+)/KILL/\d+"$', initd.read_text(), re.MULTILINE)
    assert match, f"no TERM/N/KILL/M retry in {initd}"
    return float(match[1])


def test_shutdown_stages_fit_the_retry_budget() -> None:
    stages = [app.STOP_SERVICES, app.STOP_GATEWAY, app.STOP_WEB, app.STOP_SERVICES, app.STOP_STORE]
    assert sum(stages) < retry_budget(FILES / "swarm-controller.initd")
    # The agent: the build and shells are cancelled, then the stream flushed and closed.
    assert retry_budget(FILES / "swarm-agent.initd") > STOP_TIMEOUT + FLUSH_TIMEOUT
