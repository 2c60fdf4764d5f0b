"""Test builds over real HTTP: one controller process with Portage (its
prefix holds the swarm's test overlay) and no drones, so what is accepted
stays queued. The public tier's one write: 401 without a token or with a
revoked one, 400 with the reason (Portage's answer for an unknown
package), 413 for a 1 MB body, 403 for another origin, the sixth request
in an hour 429 with a Retry-After of the bucket's refill, another user's
token unaffected, nothing queued by a refusal; the views on both tiers,
and swarm-cli testbuild against the same controller."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from swarm.controller.portage import PortageWorker

from support.cli import run_here
from support.fleet import Fleet, admin, start_fleet
from support.procs import Controller, http

pytestmark = [pytest.mark.real, pytest.mark.timeout(120)]

SUBMIT = "/api/v1/test-build"
LEAF = "swarm-test/leaf-data"
PACKAGES = [
    "swarm-test/chain-a",
    "swarm-test/chain-b",
    "swarm-test/chain-c",
    "swarm-test/chain-d",
    "swarm-test/leaf-hello",
]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("testbuild-api"), (), portage=True)
    try:
        yield fleet
    finally:
        fleet.stop()


def token(swarm: Fleet, user: str, rate: str = "5/h", **limits: int) -> str:
    made = admin(swarm, "POST", "/admin/api/test-build-tokens", {"user": user, "rate": rate, **limits})
    assert made["user"] == user and "secret_hash" not in made
    return str(made["secret"])


def ask(
    controller: Controller, secret: str | None, body: dict[str, Any] | bytes, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    """POST /api/v1/test-build; (status, answer, headers of interest)."""
    sent = {"Content-Type": "application/json", **headers}
    if secret is not None:
        sent["Authorization"] = f"Bearer {secret}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(controller.public_url + SUBMIT, data=raw, method="POST", headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, answer, got = exc.code, exc.read(), exc.headers
        exc.close()
    keep = {k: got[k] for k in ("Retry-After", "WWW-Authenticate") if got.get(k) is not None}
    return status, json.loads(answer), keep


def builds_of(swarm: Fleet, user: str) -> list[dict[str, Any]]:
    listed = admin(swarm, "GET", "/admin/api/test-builds?limit=1000")["builds"]
    return [b for b in listed if b["user"] == user]


def test_without_a_valid_token_it_is_401_and_nothing_is_queued(swarm: Fleet) -> None:
    c = swarm.controller
    secret = token(swarm, "dave")
    for wrong in (None, "", "tbt-000000000000.nope", secret + "x"):
        status, answer, headers = ask(c, wrong, {"package": LEAF})
        assert status == 401, (wrong, answer)
        assert "Bearer" in headers["WWW-Authenticate"] and "token" in answer["error"]["message"]
    token_id = secret.partition(".")[0]
    revoked = admin(swarm, "DELETE", f"/admin/api/test-build-tokens/{token_id}")
    assert revoked["revoked_at"] is not None
    status, answer, _ = ask(c, secret, {"package": LEAF})
    assert (status, answer["error"]["message"]) == (401, "this test-build token was revoked")
    listed = admin(swarm, "GET", "/admin/api/test-build-tokens")["tokens"]
    assert next(t for t in listed if t["id"] == token_id)["revoked_at"] is not None
    assert all("secret" not in t for t in listed)
    assert builds_of(swarm, "dave") == []


def test_bad_input_is_a_clear_4xx_and_nothing_is_queued(swarm: Fleet) -> None:
    c = swarm.controller
    secret = token(swarm, "erin", rate="20/h")
    for body, why in (
        (
            {"package": "swarm-test/no-such-package"},
            "no package swarm-test/no-such-package in the swarm's tree",
        ),
        ({"package": "swarm-test/leaf-data; rm -rf /"}, "shell metacharacters"),
        ({"package": "/var/db/repos/gentoo"}, "a path"),
        ({"package": "@world"}, "a package set"),
        ({"package": LEAF, "use": ["ssl"]}, "allows no USE flags"),
        ({"package": LEAF, "notify": "nobody"}, "not an email address"),
        ({"package": LEAF, "webhook": "file:///etc/passwd"}, "not an http"),
        ({"package": LEAF, "priority": 1}, "unknown field 'priority'"),
        ({}, "package must be a string"),
    ):
        status, answer, _ = ask(c, secret, body)
        assert status == 400 and why in answer["error"]["message"], (body, answer)
    status, answer, _ = ask(c, secret, b'{"package": "' + b"x" * 1_000_000 + b'"}')
    assert status == 413, answer
    status, answer, _ = ask(c, secret, b"not json")
    assert status == 400 and "not valid JSON" in answer["error"]["message"]
    status, answer, _ = ask(c, secret, {"package": LEAF}, Origin="https://evil.example")
    assert (status, answer["error"]["message"]) == (403, "cross-origin request refused")
    assert builds_of(swarm, "erin") == []
    # The tier's own origin (what a page it serves sends) is fine.
    status, answer, _ = ask(c, secret, {"package": LEAF}, Origin=c.public_url)
    assert status == 202, answer
    # curl -d sends JSON as a form: taken, as the issue's own example does (the token
    # is a header a page of another origin cannot send unasked); other types are 415.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, answer, _ = ask(c, secret, {"package": "swarm-test/leaf-script"}, **form)
    assert status == 202 and answer["existing"] is False, answer
    status, answer, _ = ask(c, secret, {"package": LEAF}, **{"Content-Type": "text/plain"})
    assert status == 415 and "Content-Type: application/json" in answer["error"]["message"], answer
    # Everything else on the public tier stays read-only.
    status, _ = http("POST", c.public_url + "/api/v1/test-builds", body=b"{}")
    assert status == 405


def test_the_sixth_request_in_an_hour_is_429_and_another_users_token_is_not(swarm: Fleet) -> None:
    c = swarm.controller
    frank, grace = token(swarm, "frank", max_queued=10), token(swarm, "grace")
    ids = []
    for package in PACKAGES:
        status, answer, _ = ask(c, frank, {"package": package, "notify": "frank@example.org"})
        assert status == 202, answer
        assert answer["existing"] is False and answer["state"] == "queued" and answer["estimate_s"] > 0
        assert answer["links"] == {"self": f"{SUBMIT}/{answer['id']}", "log": f"{SUBMIT}/{answer['id']}/log"}
        ids.append(answer["id"])
    status, answer, headers = ask(c, frank, {"package": LEAF})
    assert status == 429, answer
    assert 700 <= int(headers["Retry-After"]) <= 720  # one request back every 12 minutes
    # A duplicate is the queued build, not a request: answered even now.
    status, answer, _ = ask(c, frank, {"package": "swarm-test/chain-a"})
    assert (status, answer["id"], answer["existing"]) == (202, ids[0], True)
    status, answer, _ = ask(c, grace, {"package": LEAF})
    assert status == 202 and answer["existing"] is False
    assert [b["id"] for b in reversed(builds_of(swarm, "frank"))] == ids

    # What anyone sees of one, and what admins see.
    status, public = http("GET", c.public_url + f"{SUBMIT}/{ids[1]}")
    assert status == 200 and public["cpv"] == "swarm-test/chain-b-1" and public["state"] == "queued"
    assert "frank@example.org" not in json.dumps(public) and "token_id" not in public
    status, recent = http("GET", c.public_url + "/api/v1/test-builds?state=queued&limit=1000")
    assert status == 200 and {ids[1], answer["id"]} <= {b["id"] for b in recent["builds"]}
    assert "frank@example.org" not in json.dumps(recent)
    shown = admin(swarm, "GET", f"/admin/api/test-builds/{ids[1]}")
    assert shown["notify_email"] == "frank@example.org" and shown["token_id"] == frank.partition(".")[0]
    status, _ = http("GET", c.public_url + f"{SUBMIT}/tb-000000000000")
    assert status == 404
    # Cancelled by an admin: its place in the queue goes to the next.
    cancelled = admin(swarm, "POST", f"/admin/api/test-builds/{ids[0]}/cancel")
    assert (cancelled["state"], cancelled["reason"]) == ("cancelled", "cancelled by admin:admin")
    status, refused = swarm.controller.admin("POST", f"/admin/api/test-builds/{ids[0]}/cancel")
    assert status == 409, refused
    status, after = http("GET", c.public_url + f"{SUBMIT}/{ids[1]}")
    assert after["position"] == public["position"] - 1
    events = {e["type"] for e in swarm.controller.events()}
    assert {"test_build_queued", "test_build_cancelled"} <= events
    status, public_events = http("GET", c.public_url + "/api/v1/events?limit=1000")
    assert not any(e["type"].startswith("test_build_token") for e in public_events["events"])


def test_requests_arriving_together_each_get_their_own_packages_answer(swarm: Fleet) -> None:
    """Portage is asked about atoms that arrive together in one question
    (PortageWorker.match): each request still gets its own answer."""
    secret = token(swarm, "ivan", rate="60/h", burst=10, max_queued=10)
    known = [
        "swarm-test/diamond-base",
        "swarm-test/diamond-left",
        "swarm-test/diamond-top",
        "swarm-test/sleeper",
    ]
    unknown = ["swarm-test/nowhere-a", "swarm-test/nowhere-b"]
    with ThreadPoolExecutor(len(known) + len(unknown)) as pool:
        answers = dict(
            zip(
                known + unknown,
                pool.map(lambda p: ask(swarm.controller, secret, {"package": p}), known + unknown),
                strict=True,
            )
        )
    for package in known:
        status, answer, _ = answers[package]
        assert status == 202 and answer["existing"] is False, (package, answer)
        shown = admin(swarm, "GET", f"/admin/api/test-builds/{answer['id']}")
        assert shown["cpv"].startswith(package + "-"), shown
    for package in unknown:
        status, answer, _ = answers[package]
        assert (status, answer["error"]["message"]) == (400, f"no package {package} in the swarm's tree")
    assert len(builds_of(swarm, "ivan")) == len(known)


def test_the_portage_workers_warm_up_opens_the_tree_it_then_answers_from(swarm: Fleet) -> None:
    """The warm-up (run when a token is made) does what a first match
    would, so a burst's first request does not; the tree it opened answers."""
    prefix = swarm.controller_prefix
    assert prefix is not None

    async def scenario() -> tuple[str, str]:
        worker = PortageWorker(prefix.root)
        try:
            await worker.warm()  # an error of the worker's would raise here
            return await worker.match("swarm-test/leaf-hello"), await worker.match("=swarm-test/chain-a-1")
        finally:
            await worker.stop()

    assert asyncio.run(scenario()) == ("swarm-test/leaf-hello-1", "swarm-test/chain-a-1")


def cli(swarm: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return run_here(swarm.controller.admin_url, swarm.controller.info["admin_key_file"], *args)


def test_swarm_cli_testbuild(swarm: Fleet) -> None:
    made = cli(swarm, "testbuild", "token", "create", "--user", "heidi", "--rate", "2/h", "--max-queued", "1")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.split()[1]
    assert secret.startswith("tbt-") and "Shown this once" in made.stdout
    status, answer, _ = ask(swarm.controller, secret, {"package": LEAF})
    assert status == 202, answer
    listed = json.loads(cli(swarm, "testbuild", "list", "--state", "queued", "--json").stdout)
    assert answer["id"] in {b["id"] for b in listed["builds"]}
    shown = cli(swarm, "testbuild", "show", answer["id"])
    assert (
        shown.returncode == 0
        and "asked by   heidi" in shown.stdout
        and "swarm-test/leaf-data-1" in shown.stdout
    )
    tokens = cli(swarm, "testbuild", "token", "list")
    assert "heidi" in tokens.stdout and "1/1" in tokens.stdout and secret not in tokens.stdout
    cancelled = cli(swarm, "testbuild", "cancel", answer["id"])
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    token_id = secret.partition(".")[0]
    assert cli(swarm, "testbuild", "token", "revoke", token_id).returncode == 0
    again = cli(swarm, "testbuild", "cancel", answer["id"])
    assert again.returncode == 1 and "409" in again.stderr and len(again.stderr.splitlines()) == 1
    bad = cli(swarm, "testbuild", "token", "create", "--user", "x", "--rate", "often")
    assert bad.returncode == 2 and "rate like 5/h" in bad.stderr
    assert cli(swarm, "testbuild", "show", "tb-000000000000").returncode == 1
