"""Malformed input at the HTTP edge gets a 4xx JSON error that says why,
never a 500, and writes no ERROR line (issue 13): query and path values,
JSON bodies and their content type, control characters in names and
commands, exec timeouts, and "local" access through the API.

One real controller (controller/app.py) runs in this process for the
module (support/inproc.py): real HTTP over 127.0.0.1, the real web tiers
and middlewares; its drones are control streams that only record what
they are sent (tests/fakes/links.py)."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from swarm.controller.config import ControllerConfig
from swarm.controller.domain import HelloData
from swarm.controller.errors import InvalidArgument
from swarm.controller.web import parse

from fakes.links import FakeLink
from support.inproc import InProcessController
from support.procs import wait_for

pytestmark = [
    pytest.mark.timeout(60),
    # The controller runs in this process, under pytest's warnings-as-errors:
]

FILED, PLAIN = "filed", "plain"  # a drone with "local" access from the drones file, and one without
FILED_REBOOT = "true {name}"
DEEP = "[" * 990 + "]" * 990


@dataclass
class Rig:
    proc: InProcessController
    links: dict[str, FakeLink]

    @property
    def public_url(self) -> str:
        return self.proc.public_url

    @property
    def admin_url(self) -> str:
        return self.proc.admin_url

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """An admin request with the key; ``body`` sent as JSON."""
        data = None if body is None else json.dumps(body).encode()
        return send(
            self.admin_url,
            method,
            path,
            body=data,
            content_type=None if body is None else JSON,
            key=self.proc.admin_key,
        )


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("http-input")
    drones_file = root / "drones.toml"
    drones_file.write_text(f'[drones.{FILED}]\nssh = "local"\nhost = "local"\nreboot = "{FILED_REBOOT}"\n')
    config = ControllerConfig(
        data_dir=root / "controller",
        bind="127.0.0.1",
        admin_bind="127.0.0.1",
        grpc_port=0,
        public_port=0,
        admin_port=0,
        enroll_port=0,
        log_file=Path(""),
        heal_grace=3600.0,
        drones_file=drones_file,
    )
    proc = InProcessController(config).start()
    links = {name: FakeLink(name.ljust(32, "0")) for name in (FILED, PLAIN)}
    for name, link in links.items():
        hello = HelloData(link.drone_id, name, 2, "lxc", "lan", "test", 1000, "host", "", "", "", None)
        proc.call(proc.controller.fleet.attach, hello, link)
    healer = proc.controller.healer
    assert healer is not None
    wait_for(lambda: healer.access_of(FILED.ljust(32, "0")).ssh == "local", what="the drones file applied")
    try:
        yield Rig(proc, links)
    finally:
        proc.stop()


def send(
    url: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    key: str | None = None,
) -> tuple[int, Any]:
    """One request as it is (no client-side encoding or defaults); (status, parsed JSON)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if key is not None:
        headers["X-Admin-Key"] = key
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    assert response.headers.get("Content-Type", "").startswith("application/json"), raw[:200]
    return response.status, json.loads(raw)


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The controller logs no ERROR (a traceback) for what the test sends."""
    with caplog.at_level(logging.INFO):
        yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


def refused(status: int, reply: Any, expected: int, needle: str) -> None:
    assert status == expected, reply
    assert reply["error"]["status"] == expected
    assert needle in reply["error"]["message"], reply


# -- query and path values -----------------------------------------------------------

PUBLIC_QUERIES = [
    ("/api/v1/events?since=%C2%B2", "since must be an event id or an ISO 8601 time"),  # ²: isdigit() is true
    ("/api/v1/events?since=" + "9" * 5000, "longer than 1024"),
    ("/api/v1/events?since=" + "9" * 1000, "whole number"),
    ("/api/v1/events?since=2026-01-01T00:00:00%2B99:00", "ISO 8601 time"),
    ("/api/v1/events?since=2026-%D9%A3", "ISO 8601 time"),
    ("/api/v1/events?limit=%D9%A3", "limit must be a whole number"),  # ٣, Arabic-Indic 3
    ("/api/v1/events?limit=1_0", "limit must be a whole number"),
    ("/api/v1/events?limit=%201", "limit must be a whole number"),
    ("/api/v1/events?limit=%2B1", "limit must be a whole number"),
    ("/api/v1/events?limit=-1", "limit must be a whole number"),
    ("/api/v1/events?limit=1.0", "limit must be a whole number"),
    ("/api/v1/events?limit=5000", "limit must be between 1 and 1000"),
    ("/api/v1/events?limit=1&limit=2", "limit is given 2 times"),
    ("/api/v1/events?drone=a%00b", "control character (U+0000"),
    ("/api/v1/events?type=a%1B[31m", "control character (U+001B"),
    ("/api/v1/activity?window=%EF%BC%96%EF%BC%90", "window must be a whole number"),  # fullwidth 60
    ("/api/v1/queue?state=%E2%80%AEx", "control character (U+202E"),  # right-to-left override
    ("/api/v1/nodes/a%0Ab", "path value 'name' contains a control character (U+000A"),
    ("/api/v1/history?" + "&".join(f"k{i}=1" for i in range(40)), "at most 32"),
]


@pytest.mark.parametrize(("path", "needle"), PUBLIC_QUERIES)
def test_bad_query_and_path_values_on_the_public_tier_are_400(
    ctl: Rig, no_errors: None, path: str, needle: str
) -> None:
    refused(*send(ctl.public_url, "GET", path), 400, needle)


ADMIN_QUERIES = [
    ("/admin/api/protocol/%C2%B2", "seq must be a whole number"),
    ("/admin/api/protocol/" + "9" * 30, "seq must be a whole number"),
    ("/admin/api/protocol?after=%C2%B2", "after must be a whole number"),
    ("/admin/api/events?since=%C2%B2", "since must be an event id"),
    ("/admin/api/queue?q=x%00", "control character"),
    ("/admin/api/logs/control-plane?lines=%C2%B3", "lines must be a whole number"),
    (f"/admin/api/drones/{PLAIN}/logs?source=agent%00", "control character"),
    ("/ws/events?since=%C2%B2", "since must be a whole number"),
    ("/ws/protocol?sample=0", "sample must be between 1"),
    (f"/ws/ssh/{PLAIN}?rows=%D9%A3", "rows must be a whole number"),
    (f"/ws/ssh/{PLAIN}?via=ssh&via=agent", "via is given 2 times"),
]


@pytest.mark.parametrize(("path", "needle"), ADMIN_QUERIES)
def test_bad_query_and_path_values_on_the_admin_tier_are_400(
    ctl: Rig, no_errors: None, path: str, needle: str
) -> None:
    refused(*ctl.admin("GET", path), 400, needle)


def test_a_control_character_in_a_path_value_is_refused_before_any_lookup(ctl: Rig, no_errors: None) -> None:
    # A NUL would reach the store's query (PostgreSQL refuses it with an exception).
    reply = ctl.admin("DELETE", "/admin/api/tokens/t%00x")
    refused(*reply, 400, "path value 'id' contains a control character (U+0000")


def test_good_values_still_work(ctl: Rig, no_errors: None) -> None:
    """The same parsers accept what they should (the checks above fail for a reason)."""
    status, reply = send(ctl.public_url, "GET", "/api/v1/events?since=0&limit=0010&type=drone_connected")
    assert status == 200, reply
    assert {e["type"] for e in reply["events"]} == {"drone_connected"}
    assert len(reply["events"]) == 2  # the module's two drones
    status, reply = send(ctl.public_url, "GET", "/api/v1/events?since=2000-01-01T00:00:00Z&limit=1")
    assert status == 200 and len(reply["events"]) == 1, reply
    status, reply = send(ctl.public_url, "GET", f"/api/v1/nodes/{PLAIN}")
    assert status == 200 and reply["node"]["name"] == PLAIN, reply


# -- JSON bodies -------------------------------------------------------------------

LOGIN = "/admin/api/login"
JSON = "application/json"
NO_KEY = b'{"nokey": 1}'  # valid JSON the login refuses for itself: no wrong key counted
BODIES = [
    (DEEP.encode(), JSON, 400, "nested deeper than 32"),
    (b'{"a":' * 990 + b"1" + b"}" * 990, JSON, 400, "nested deeper than 32"),
    (NO_KEY, "application/json; charset=foo-bar-baz", 415, "must be UTF-8, not charset 'foo-bar-baz'"),
    (NO_KEY, "application/json; charset=latin-1", 415, "must be UTF-8"),
    (NO_KEY, "text/plain", 415, "Content-Type: application/json, not 'text/plain'"),
    (b"key=x", "application/x-www-form-urlencoded", 415, "not 'application/x-www-form-urlencoded'"),
    (NO_KEY, None, 415, "Content-Type: application/json"),
    (b'{"key": NaN}', JSON, 400, "NaN is not a JSON number"),
    (b'{"key": -Infinity}', JSON, 400, "-Infinity is not a JSON number"),
    (b'{"key": 1e999}', JSON, 400, "finite numbers only"),
    (b'{"key": 9007199254740993}', JSON, 400, "integers within +-2^53"),
    (b'{"key": ' + b"9" * 5000 + b"}", JSON, 400, "integers within +-2^53"),
    (b'{"key": "\\ud800"}', JSON, 400, "lone UTF-16 surrogate"),
    (b'{"key": "\xff"}', JSON, 400, "not UTF-8"),
    (b'["key"]', JSON, 400, "must be a JSON object"),
    (b'{"key": ', JSON, 400, "not valid JSON"),
    (b"[[[[}", JSON, 400, "not valid JSON"),
    (b'{"key": "' + b"x" * 70_000 + b'"}', JSON, 413, "Maximum request body size 65536 exceeded"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "needle"), BODIES)
def test_bad_bodies_to_the_login_are_refused_without_a_key(
    ctl: Rig, no_errors: None, body: bytes, content_type: str | None, status: int, needle: str
) -> None:
    refused(*send(ctl.admin_url, "POST", LOGIN, body=body, content_type=content_type), status, needle)


@pytest.mark.parametrize(
    "content_type", [JSON, "application/json; charset=UTF-8", "Application/JSON; charset=utf8"]
)
def test_json_with_a_utf8_or_no_charset_is_read(ctl: Rig, no_errors: None, content_type: str) -> None:
    reply = send(ctl.admin_url, "POST", LOGIN, body=NO_KEY, content_type=content_type)
    refused(*reply, 400, 'send {"key": "<an admin key>"}')  # read, and refused for what it says


# -- names, commands and timeouts ----------------------------------------------------

ADMIN_BODIES = [
    ("/admin/api/tokens", {"name": "web1\n"}, "name contains a control character (U+000A"),
    ("/admin/api/tokens", {"name": 5}, "name must be a string"),
    ("/admin/api/keys", {"name": "ci\n"}, "a key name is 1-64 characters"),
    (f"/admin/api/drones/{PLAIN}/rename", {"name": "new\u202ename"}, "control character (U+202E"),
    (f"/admin/api/drones/{PLAIN}/rename", {"name": "x" * 65}, "longer than 64"),
    ("/admin/api/healing", {"action": "pause", "drone": "a\x00"}, "drone contains a control character"),
    (f"/admin/api/drones/{PLAIN}/exec", {"command": "true\x1b[2J"}, "command contains a control character"),
    (f"/admin/api/drones/{PLAIN}/exec", {"command": "x" * 8193}, "longer than 8192"),
    (f"/admin/api/drones/{PLAIN}/exec", {"command": " "}, "command must not be empty"),
    (f"/admin/api/drones/{PLAIN}/exec", {"command": "true", "timeout": 1e-300}, "from 0.1 to 3600"),
    (f"/admin/api/drones/{PLAIN}/exec", {"command": "true", "timeout": 0}, "from 0.1 to 3600"),
    (f"/admin/api/drones/{PLAIN}/exec", {"command": "true", "timeout": 86400}, "from 0.1 to 3600"),
    (f"/admin/api/drones/{PLAIN}/exec", {"command": "true", "timeout": "5"}, "timeout must be a number"),
    (f"/admin/api/drones/{PLAIN}/exec", {"command": "true", "timeout": True}, "timeout must be a number"),
]


@pytest.mark.parametrize(("path", "body", "needle"), ADMIN_BODIES)
def test_control_characters_and_bad_values_in_admin_bodies_are_400(
    ctl: Rig, no_errors: None, path: str, body: dict[str, Any], needle: str
) -> None:
    refused(*ctl.admin("POST", path, body), 400, needle)


def test_exec_with_a_nul_byte_is_refused_before_it_reaches_the_agent(ctl: Rig, no_errors: None) -> None:
    reply = ctl.admin("POST", f"/admin/api/drones/{PLAIN}/exec", {"command": "id\x00; reboot"})
    refused(*reply, 400, "command contains a control character (U+0000 at position 2)")
    assert ctl.proc.call(list, ctl.links[PLAIN].channels) == []
    status, audit = ctl.admin("GET", "/admin/api/events?type=drone_exec")
    assert status == 200 and audit["events"] == [], audit


# -- "local" access: never from the API ----------------------------------------------


def put_access(ctl: Rig, name: str, fields: dict[str, Any]) -> tuple[int, Any]:
    return ctl.admin("PUT", f"/admin/api/drones/{name}", fields)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"ssh": "local"}, 'ssh = "local" runs commands on the controller'),
        (
            {"type": "lxc", "host": "local", "reboot": "touch /tmp/pwned-{vmid}", "vmid": "1"},
            'host = "local"',
        ),
        ({"ssh": " local "}, 'ssh = "local"'),
        ({"host": "pve1", "reboot": "true " + "x" * 1000}, "1005 characters: at most 1000"),
        ({"host": "pve1", "reboot": "true\nreboot"}, "control characters"),
    ],
)
def test_the_api_cannot_set_local_access_or_an_overlong_template(
    ctl: Rig, no_errors: None, fields: dict[str, Any], needle: str
) -> None:
    refused(*put_access(ctl, PLAIN, fields), 400, needle)
    healer = ctl.proc.controller.healer
    assert healer is not None
    access = ctl.proc.call(healer.access_of, PLAIN.ljust(32, "0"))
    assert (access.ssh, access.host, access.reboot) == ("", "", "")


def test_the_api_may_keep_local_access_from_the_drones_file_but_not_change_its_reboot_command(
    ctl: Rig, no_errors: None
) -> None:
    kept = {"type": "lxc", "ssh": "local", "host": "local", "reboot": FILED_REBOOT}
    status, reply = put_access(ctl, FILED, kept)
    assert status == 200, reply
    assert reply["access"]["ssh"] == "local" and reply["access"]["updated_by"] != "config file"
    refused(*put_access(ctl, FILED, {**kept, "reboot": "touch /tmp/pwned"}), 400, "only the drones file")
    status, reply = put_access(
        ctl, FILED, {**kept, "host": "pve1", "reboot": "pct reboot {vmid}", "vmid": "7"}
    )
    assert status == 200, reply  # off the controller's machine, the template is the admin's again


# -- the parser on its own -----------------------------------------------------------


def test_whole_numbers_are_ascii_digits_in_range() -> None:
    assert parse.whole_number("007", "n", 0, 10) == 7
    for raw in ("²", "٣", "\uff11", "1_0", " 1", "1 ", "+1", "-1", "0x1", "1e3", "", "9" * 21):
        with pytest.raises(InvalidArgument):
            parse.whole_number(raw, "n", 0, 10**30)


def test_json_depth_is_checked_without_recursion_and_strings_do_not_count() -> None:
    assert parse.loads("[" * 32 + "]" * 32) is not None
    assert parse.loads(json.dumps({"a": "[" * 5000})) == {"a": "[" * 5000}
    assert parse.loads(json.dumps({"a": '\\"[[['})) == {"a": '\\"[[['}
    with pytest.raises(InvalidArgument, match="nested deeper"):
        parse.loads("[" * 33 + "]" * 33)
    with pytest.raises(InvalidArgument):
        parse.loads("[" * 100_000)  # unbalanced: refused before the parser recurses
    with pytest.raises(InvalidArgument, match="nested deeper"):
        parse.loads("[" * 500_000 + "]" * 500_000)


def test_control_characters_in_text() -> None:
    assert parse.control_character("ls -l\n\tpwd", lines=True) is None
    assert parse.control_character("ls\n") == "a control character (U+000A at position 2)"
    for text in ("a\x00", "a\r", "\x7f", "\x9b", "\u2066", "\u200f"):
        assert parse.control_character(text, lines=True) is not None, repr(text)
