"""Binhost targets over HTTP and from swarm-cli, in process: one real
controller (controller/app.py) in this process for the module
(support/inproc.py), real HTTP over 127.0.0.1, started with a binhosts
file. It has no Portage prefix, so no release and no mirror service: the
answers that need a current release are refused here, and
tests/test_api_schema.py fetches them from a controller with a release."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from swarm.controller.domain import HelloData

from fakes.links import FakeLink
from support.inproc import InProcessController, local_config
from support.inproc import run_cli as cli
from support.procs import http

pytestmark = [
    pytest.mark.timeout(60),
]

FILE = """
[binhosts.controller]
networks = ["lan"]
priority = 5

[binhosts.tail]
url = "https://tail.example.ts.net/swarm/"
destination = "push@tail.example.ts.net:/srv/swarm"
networks = ["tailscale"]
"""
TAIL = {"url": "https://tail.example.ts.net/swarm", "destination": "push@tail.example.ts.net:/srv/swarm"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessController]:
    root = tmp_path_factory.mktemp("binhost-api")
    (root / "binhosts.toml").write_text(FILE)
    config = local_config(root, binhosts_file=root / "binhosts.toml", ping_interval=3600.0)
    proc = InProcessController(config).start()
    try:
        link = FakeLink("lanbox".ljust(32, "0"))
        hello = HelloData(link.drone_id, "lanbox", 4, "lxc", "lan", "test", 60_000, "host", "", "")
        proc.call(proc.controller.fleet.attach, hello, link)
        yield proc
    finally:
        proc.stop()


def admin(api: InProcessController, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return api.admin(method, path, None if body is None else json.dumps(body).encode())


def test_the_list_has_the_local_target_first_with_its_url_resolved(api: InProcessController) -> None:
    status, reply = admin(api, "GET", "/admin/api/binhosts")
    assert status == 200, reply
    assert reply["current"] is None
    local, tail = reply["binhosts"][:2]
    assert local["name"] == "controller" and local["kind"] == "local"
    assert local["url"] == api.public_url + "/binhost" and local["url_set"] is False
    assert (local["networks"], local["priority"], local["status"]) == (["lan"], 5, "healthy")
    assert local["updated_by"] == "config file" and local["destination"] == ""
    assert (
        tail["name"] == "tail" and tail["url"] == TAIL["url"] and tail["destination"] == TAIL["destination"]
    )
    # No mirror service without releases: nothing is known of the mirror.
    assert (tail["status"], tail["release"], tail["progress"], tail["synced_at"]) == (
        "unknown",
        None,
        None,
        None,
    )


def test_a_mirror_is_added_changed_and_deleted_and_each_change_is_audited(api: InProcessController) -> None:
    body = {"url": "http://m.lan/b/", "destination": "m.lan:/srv/b", "networks": ["lan"], "priority": 9}
    status, saved = admin(api, "PUT", "/admin/api/binhosts/lan", body)
    assert status == 200, saved
    assert (saved["url"], saved["url_set"], saved["priority"], saved["updated_by"]) == (
        "http://m.lan/b",
        True,
        9,
        "admin:admin",
    )
    status, shown = admin(api, "GET", "/admin/api/binhosts/lan")
    assert status == 200 and shown == saved
    # A whole replacement: what is left out takes its default.
    status, replaced = admin(
        api, "PUT", "/admin/api/binhosts/lan", {**body, "priority": None, "enabled": False}
    )
    assert status == 200 and replaced["priority"] == 0 and replaced["status"] == "disabled"
    names = [b["name"] for b in api.get("/api/v1/binhosts")["binhosts"]]
    assert "lan" not in names  # disabled: not public
    status, deleted = admin(api, "DELETE", "/admin/api/binhosts/lan")
    assert status == 200 and deleted == {"name": "lan"}
    assert admin(api, "GET", "/admin/api/binhosts/lan")[0] == 404
    assert admin(api, "DELETE", "/admin/api/binhosts/lan")[0] == 404
    audit = [(e["type"], e["data"]["name"]) for e in api.events(type="binhost_saved,binhost_deleted")]
    assert audit[-3:] == [("binhost_saved", "lan"), ("binhost_saved", "lan"), ("binhost_deleted", "lan")]
    public = api.get("/api/v1/events?type=binhost_saved,binhost_deleted&limit=1000")["events"]
    assert public == []  # who changed what, and where a mirror is reached, are the admins' own


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        (
            "/admin/api/binhosts/evil",
            {**TAIL, "destination": "-oProxyCommand=id:/srv/x"},
            400,
            "invalid host",
        ),
        ("/admin/api/binhosts/evil", {**TAIL, "url": "http://a@b/"}, 400, "user name or password"),
        ("/admin/api/binhosts/evil", {**TAIL, "networks": ["a b"]}, 400, "network 'a b'"),
        ("/admin/api/binhosts/evil", {**TAIL, "shell": "sh"}, 400, "unknown field(s) shell"),
        ("/admin/api/binhosts/Evil", TAIL, 400, "name must be"),
        ("/admin/api/binhosts/controller", {"destination": "h:/srv/x"}, 400, "no destination"),
    ],
)
def test_bad_targets_are_refused_with_the_reason(
    api: InProcessController, path: str, body: dict[str, Any], status: int, reason: str
) -> None:
    got, reply = admin(api, "PUT", path, body)
    assert got == status and reason in reply["error"]["message"], reply
    assert admin(api, "GET", "/admin/api/binhosts/evil")[0] == 404


def test_the_local_target_stays_and_sync_needs_the_mirror_service(api: InProcessController) -> None:
    status, reply = admin(api, "DELETE", "/admin/api/binhosts/controller")
    assert status == 409 and "cannot be deleted" in reply["error"]["message"]
    status, reply = admin(api, "POST", "/admin/api/binhosts/sync")
    assert status == 409 and "releases are off" in reply["error"]["message"]
    assert admin(api, "POST", "/admin/api/binhosts/tail/sync")[0] == 409
    assert admin(api, "POST", "/admin/api/binhosts/nobody/sync")[0] == 404


def test_the_public_list_has_no_destination_nor_error(api: InProcessController) -> None:
    listed = api.get("/api/v1/binhosts")
    assert listed["current"] is None
    local = listed["binhosts"][0]
    assert local["name"] == "controller" and local["url"] == api.public_url + "/binhost"
    for b in listed["binhosts"]:
        assert "destination" not in b and "error" not in b and "updated_by" not in b


@pytest.mark.parametrize(
    ("query", "status", "reason"),
    [
        ("network=lan", 409, "no release is current"),
        ("drone=lanbox", 409, "no release is current"),
        ("", 409, "no release is current"),
        ("drone=nobody", 404, "no drone 'nobody'"),
        ("network=-lan", 400, "network must be"),
        ("network=lan&drone=lanbox", 400, "not both"),
        ("release=latest", 400, "release must be"),
        ("release=v2026.12.05", 404, "releases are off"),
    ],
)
def test_binrepos_conf_refusals_say_why(
    api: InProcessController, query: str, status: int, reason: str
) -> None:
    got, reply = http("GET", f"{api.public_url}/api/v1/binrepos.conf?{query}")
    assert got == status and reason in reply["error"]["message"], reply
    got, reply = admin(api, "GET", f"/admin/api/binrepos.conf?{query}")
    assert got == status and reason in reply["error"]["message"], reply


# -- swarm-cli binhost ---------------------------------------------------------------------------


def test_cli_sets_only_the_options_given_and_lists_and_shows(
    api: InProcessController, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        api,
        capsys,
        "binhost",
        "set",
        "edge",
        "--dest",
        "root@edge.lan:/srv/b",
        "--url",
        "http://edge.lan/b",
        "--network",
        "lan",
        "--network",
        "dmz",
        "--priority",
        "3",
    )
    assert code == 0, err
    assert "set edge (rsync): http://edge.lan/b, serves lan, dmz, priority 3" in out
    code, out, err = cli(api, capsys, "binhost", "set", "edge", "--disable")
    assert code == 0, err
    code, out, err = cli(api, capsys, "--json", "binhost", "show", "edge")
    shown = json.loads(out)
    assert (shown["networks"], shown["priority"], shown["enabled"], shown["url"]) == (
        ["lan", "dmz"],
        3,
        False,
        "http://edge.lan/b",
    )
    # The local target's default URL is not copied into its settings.
    assert cli(api, capsys, "binhost", "set", "controller", "--priority", "6")[0] == 0
    local = admin(api, "GET", "/admin/api/binhosts/controller")[1]
    assert (local["url_set"], local["priority"], local["networks"]) == (False, 6, ["lan"])
    code, out, _ = cli(api, capsys, "binhost", "list")
    lines = out.splitlines()
    assert lines[0] == "current release: - (none promoted)"
    assert lines[2].split()[:3] == ["controller", "local", "healthy"]
    assert [line.split()[0] for line in lines[2:]] == ["controller", "edge", "tail"]
    code, out, _ = cli(api, capsys, "binhost", "show", "edge")
    assert "destination root@edge.lan:/srv/b" in out and "status      disabled" in out
    assert cli(api, capsys, "binhost", "delete", "edge")[0] == 0


def test_cli_errors_are_one_line_with_the_exit_code(
    api: InProcessController, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(api, capsys, "binhost", "set", "bad", "--url", "http://x/", "--dest", "x:/a/../b")
    assert code == 1 and err.count("\n") == 1 and "'..'" in err
    code, _, err = cli(api, capsys, "binhost", "delete", "controller")
    assert code == 1 and "409 controller is the controller's own binhost" in err
    code, _, err = cli(api, capsys, "binhost", "conf", "--network", "lan")
    assert code == 1 and "no release is current" in err
    code, _, err = cli(api, capsys, "binhost", "sync")
    assert code == 1 and "releases are off" in err
    code, _, err = cli(api, capsys, "binhost", "show", "Bad_Name")
    assert code == 2 and "not a binhost name" in err
    code, _, err = cli(api, capsys, "binhost", "conf", "--network", "lan", "--drone", "x")
    assert code == 2 and "not allowed with" in err
