"""Releases over HTTP on both tiers (controller/web/releases.py): one real
controller process with builds on for the module, its staging binhost
holding small real gpkgs (tools/gpkgs.py: Portage's own gpkg code), real gpg.

What is checked here is the HTTP side: statuses and their JSON messages
(409 refusals, 400 for a malformed version or body, 404 for an unknown
one), the public list before and after cuts, the admin's name in the
audit, the release key, and the releases' binhost files: ``current``
switching at once on a promote and a rollback, and nothing served but a
listed release's regular files (no cut in progress, no listing, no way
out). The core's own rules on disk: tests/test_releases.py. Every
operation's body against its schema: tests/test_api_schema.py.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from swarm.controller.releases import VERSION_RE

from support.fleet import Fleet, start_fleet
from support.gpkgs import inject

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]

FIRST = "swarm-test/leaf-data-1"  # staged before the first cut
ADDED = "swarm-test/leaf-script-1"  # staged before the second
PUBLIC_LIST = ("/api/v1/releases", "/releases.json")
BAD_VERSIONS = ("latest", "v2026.1.5", "v2026.12.05-0", "2026.12.05", "v2026.12.05-")
UNKNOWN = "v1999.01.01"


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("release-api"), (), portage=True)
    try:
        assert fleet.controller_prefix is not None
        inject(fleet.controller_prefix, FIRST)
        yield fleet
    finally:
        fleet.stop()


def admin(swarm: Fleet, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return swarm.controller.admin(method, path, None if body is None else json.dumps(body).encode())


def public(swarm: Fleet, path: str, method: str = "GET") -> requests.Response:
    return requests.request(method, swarm.controller.public_url + path, timeout=30)


def refused(answer: tuple[int, Any], status: int, *words: str) -> str:
    """The message of an error answer with this status, which says each of ``words``."""
    code, body = answer
    assert code == status, (code, body)
    assert body["error"]["status"] == status, body
    message: str = body["error"]["message"]
    for word in words:
        assert word in message, (word, message)
    return message


def cut(swarm: Fleet, **body: Any) -> dict[str, Any]:
    status, reply = admin(swarm, "POST", "/admin/api/releases", body)
    assert status == 201, reply
    assert VERSION_RE.match(reply["version"]), reply
    return dict(reply)


def served(swarm: Fleet, path: str) -> requests.Response:
    answer = public(swarm, path)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
    return answer


def current_manifest(swarm: Fleet) -> dict[str, Any]:
    manifest: dict[str, Any] = served(swarm, "/binhost/current/manifest.json").json()
    return manifest


def raw_get(swarm: Fleet, path: str) -> int:
    """The status of a GET of ``path`` exactly as written (no client normalises its dots)."""
    parts = urllib.parse.urlsplit(swarm.controller.public_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def fingerprint(armored: str) -> str:
    """The primary key's fingerprint, as gpg itself reads the armored key (no keyring touched)."""
    colons = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--show-keys"],
        input=armored.encode(),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    lines = colons.splitlines()
    first_key = next(i for i, line in enumerate(lines) if line.startswith("pub:"))
    return next(line.split(":")[9] for line in lines[first_key:] if line.startswith("fpr:"))


def test_before_any_cut_the_lists_are_empty_and_nothing_is_current(swarm: Fleet) -> None:
    for path in PUBLIC_LIST:
        answer = served(swarm, path)
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json() == {"current": None, "previous": None, "releases": []}
    day = "v%Y.%m.%d"
    before = datetime.now(UTC).strftime(day)
    status, body = admin(swarm, "GET", "/admin/api/releases")
    # The first cut's name: today's date (UTC) on the controller.
    assert body.pop("next_version") in {before, datetime.now(UTC).strftime(day)}
    assert status == 200 and body == {
        "current": None,
        "previous": None,
        "releases": [],
        "promotions": [],
        "schedule": None,
    }
    answer = public(swarm, "/binhost/current/Packages")
    assert answer.status_code == 404 and "no release is current" in answer.json()["error"]["message"]
    # The key is made at the first cut.
    key = public(swarm, "/releases/key.asc")
    assert key.status_code == 404 and "the first cut makes it" in key.json()["error"]["message"]


def test_a_cut_refuses_bad_bodies_with_the_reason(swarm: Fleet) -> None:
    path = "/admin/api/releases"
    refused(admin(swarm, "POST", path, {"notes": "x" * 4001}), 400, "notes", "4000")
    refused(admin(swarm, "POST", path, {"notes": "bell\x07"}), 400, "notes", "control character")
    refused(admin(swarm, "POST", path, {"force": "yes"}), 400, "force")
    refused(admin(swarm, "POST", path, {"notes": 12}), 400, "notes")
    status, body = admin(swarm, "GET", "/admin/api/releases")
    assert status == 200 and body["releases"] == []


def test_cut_promote_cut_promote_rollback_delete(swarm: Fleet) -> None:
    today = time.strftime("v%Y.%m.%d", time.gmtime())
    first = cut(swarm, notes="the first\nof many")
    v1 = first["version"]
    assert v1.startswith(today)
    assert first["package_count"] == 1 and first["total_size"] > 0
    assert (first["current"], first["previous"], first["promoted_at"]) == (False, False, None)
    assert first["notes"] == "the first\nof many"

    # Nothing changed: refused, and said so; forced it would be cut.
    refused(admin(swarm, "POST", "/admin/api/releases", {}), 409, "nothing changed", v1)

    # The release and its files: the manifest served is the one listed, and
    # each package is the file the manifest's checksum names.
    shown = served(swarm, f"/api/v1/releases/{v1}").json()
    assert [p["cpv"] for p in shown["packages"]] == [FIRST]
    key = served(swarm, "/releases/key.asc")
    assert key.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert shown["signing_key"] == fingerprint(key.text)
    status, admin_shown = admin(swarm, "GET", f"/admin/api/releases/{v1}")
    assert status == 200 and admin_shown == shown
    files = f"/binhost/releases/{v1}"
    assert served(swarm, f"{files}/manifest.json").json()["version"] == v1
    package = shown["packages"][0]
    gpkg = served(swarm, f"{files}/{package['path']}")
    assert hashlib.sha256(gpkg.content).hexdigest() == package["sha256"]
    assert "immutable" in gpkg.headers["Cache-Control"]
    url = f"{swarm.controller.public_url}{files}/{package['path']}"
    assert requests.get(url, headers={"If-None-Match": gpkg.headers["ETag"]}, timeout=30).status_code == 304
    assert "-----BEGIN PGP SIGNATURE-----" in served(swarm, f"{files}/manifest.json.asc").text
    assert public(swarm, "/binhost/current/manifest.json").status_code == 404  # not promoted yet

    promoted = admin(swarm, "POST", f"/admin/api/releases/{v1}/promote")
    assert promoted[0] == 200 and promoted[1]["version"] == v1 and promoted[1]["current"] is True
    refused(admin(swarm, "POST", f"/admin/api/releases/{v1}/promote"), 409, "current release already")
    answer = served(swarm, "/binhost/current/manifest.json")
    assert answer.json()["version"] == v1 and answer.headers["Cache-Control"] == "no-cache"
    assert served(swarm, "/binhost/current/Packages").content == served(swarm, f"{files}/Packages").content

    # A second release with one more package; current switches on its promote at once.
    assert swarm.controller_prefix is not None
    inject(swarm.controller_prefix, ADDED)
    v2 = cut(swarm, notes="with a script")["version"]
    # The day's second release (or the next day's first, if midnight passed between the cuts).
    assert v2 in (f"{v1}-1", time.strftime("v%Y.%m.%d", time.gmtime())), (v1, v2)
    diff = served(swarm, f"/api/v1/releases/{v1}/diff/{v2}").json()
    assert (diff["older"], diff["newer"]) == (v1, v2)
    assert [p["cpv"] for p in diff["added"]] == [ADDED] and diff["removed"] == [] and diff["changed"] == []
    back = served(swarm, f"/api/v1/releases/{v2}/diff/{v1}").json()
    assert [p["cpv"] for p in back["removed"]] == [ADDED] and back["added"] == []
    assert admin(swarm, "GET", f"/admin/api/releases/{v1}/diff/{v2}") == (200, diff)
    added_path = next(
        p["path"] for p in served(swarm, f"/api/v1/releases/{v2}").json()["packages"] if p["cpv"] == ADDED
    )
    assert public(swarm, f"/binhost/current/{added_path}").status_code == 404

    assert admin(swarm, "POST", f"/admin/api/releases/{v2}/promote")[0] == 200
    assert current_manifest(swarm)["version"] == v2
    served(swarm, f"/binhost/current/{added_path}")
    for path in PUBLIC_LIST:
        listed = served(swarm, path).json()
        assert (listed["current"], listed["previous"]) == (v2, v1)
        assert [(r["version"], r["current"], r["previous"]) for r in listed["releases"]] == [
            (v2, True, False),
            (v1, False, True),
        ]
        assert listed["releases"][0]["promoted_at"] is not None

    # Neither current nor previous can go; a rollback names the current release.
    refused(admin(swarm, "DELETE", f"/admin/api/releases/{v2}"), 409, v2, "current")
    refused(admin(swarm, "DELETE", f"/admin/api/releases/{v1}"), 409, v1, "previous")
    refused(admin(swarm, "POST", f"/admin/api/releases/{v1}/rollback"), 409, v1, "not the current")
    status, rolled = admin(swarm, "POST", f"/admin/api/releases/{v2}/rollback")
    assert status == 200 and rolled["version"] == v1 and rolled["current"] is True, rolled
    assert current_manifest(swarm)["version"] == v1
    assert public(swarm, f"/binhost/current/{added_path}").status_code == 404

    # v2 is neither now: it goes, from the lists and from the files.
    assert admin(swarm, "DELETE", f"/admin/api/releases/{v2}") == (200, {"deleted": v2})
    assert public(swarm, f"/api/v1/releases/{v2}").status_code == 404
    assert public(swarm, f"/binhost/releases/{v2}/manifest.json").status_code == 404
    assert [r["version"] for r in served(swarm, "/releases.json").json()["releases"]] == [v1]

    # Audited with the admin's name: in the events and in the promotions.
    status, body = admin(swarm, "GET", "/admin/api/releases")
    assert status == 200
    assert [(p["version"], p["action"], p["by"]) for p in body["promotions"]] == [
        (v1, "rollback", "admin:admin"),
        (v2, "promote", "admin:admin"),
        (v1, "promote", "admin:admin"),
    ]
    events = swarm.controller.events(type="release_cut,release_deleted")
    assert {(e["type"], e["data"]["version"], e["data"]["by"]) for e in events} == {
        ("release_cut", v1, "admin:admin"),
        ("release_cut", v2, "admin:admin"),
        ("release_deleted", v2, "admin:admin"),
    }


@pytest.mark.parametrize("bad", BAD_VERSIONS)
def test_a_malformed_version_is_400_and_an_unknown_one_404(swarm: Fleet, bad: str) -> None:
    some = served(swarm, "/releases.json").json()["releases"]
    known = some[0]["version"] if some else UNKNOWN
    quoted = urllib.parse.quote(bad)
    for version, status in ((quoted, 400), (UNKNOWN, 404)):
        for method, path in (
            ("GET", f"/admin/api/releases/{version}"),
            ("GET", f"/admin/api/releases/{version}/diff/{known}"),
            ("GET", f"/admin/api/releases/{known}/diff/{version}"),
            ("POST", f"/admin/api/releases/{version}/promote"),
            ("POST", f"/admin/api/releases/{version}/rollback"),
            ("DELETE", f"/admin/api/releases/{version}"),
        ):
            refused(admin(swarm, method, path), status)
        for path in (f"/api/v1/releases/{version}", f"/api/v1/releases/{version}/diff/{known}"):
            answer = public(swarm, path)
            assert answer.status_code == status, (path, answer.text)
            assert answer.json()["error"]["status"] == status
    message = refused(admin(swarm, "GET", f"/admin/api/releases/{quoted}"), 400)
    assert "vYYYY.MM.DD" in message


def test_only_a_listed_releases_regular_files_are_served(swarm: Fleet) -> None:
    listed = served(swarm, "/releases.json").json()
    version = listed["current"]
    assert version is not None, "the lifecycle test leaves a current release"
    root = swarm.controller.data_dir / "releases"
    base = f"/binhost/releases/{version}"

    # A cut in progress, and a directory named like a release that the core
    # never listed: neither is served, though their files are there.
    for name in (".v2099.01.01.partial", "v2099.01.02"):
        folder = root / "releases" / name
        folder.mkdir()
        (folder / "manifest.json").write_text("{}")
        assert public(swarm, f"/binhost/releases/{name}/manifest.json").status_code == 404
        assert raw_get(swarm, f"/binhost/releases/{urllib.parse.quote(name)}/manifest.json") == 404

    # No listing, no directory, no hidden file, no way out of the release.
    (root / "releases" / version / "escape").symlink_to(root / "key.asc")
    (root / "releases" / version / ".manifest.json.tmp").write_text("{}")  # as a write leaves it
    try:
        paths = (
            f"{base}/",
            f"{base}/swarm-test",
            f"{base}/escape",
            f"{base}/.manifest.json.tmp",
            f"{base}/%2e%2e/%2e%2e/key.asc",
            f"{base}/..%2f..%2fkey.asc",
            "/binhost/current/",
            "/binhost/current/%2e%2e/%2e%2e/key.asc",
            "/binhost/releases/%2e%2e/key.asc",
        )
        answered = {path: raw_get(swarm, path) for path in paths}
        assert answered == dict.fromkeys(paths, 404)
    finally:
        (root / "releases" / version / "escape").unlink()
        (root / "releases" / version / ".manifest.json.tmp").unlink()
        for name in (".v2099.01.01.partial", "v2099.01.02"):
            shutil.rmtree(root / "releases" / name)
    head = requests.head(f"{swarm.controller.public_url}/binhost/current/Packages", timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) > 0
    # The public tier stays read-only.
    assert public(swarm, "/api/v1/releases", "POST").status_code == 405


def test_binhost_files_answer_ranges_and_conditional_requests_as_clients_expect(
    swarm: Fleet, tmp_path: Path
) -> None:
    """Staging, a release and ``current`` answer as Portage (If-Modified-Since
    on Packages, a resumed gpkg download), wget -c, curl -C - and an
    rsync-less mirror (curl -z, wget -N) expect."""
    manifest = current_manifest(swarm)
    package = manifest["packages"][0]["path"]
    data = (swarm.staging_pkgdir / package).read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["packages"][0]["sha256"]
    size = len(data)
    bases = ("/binhost/staging", f"/binhost/releases/{manifest['version']}", "/binhost/current")
    for base in bases:
        url = f"{swarm.controller.public_url}{base}/{package}"
        whole = requests.get(url, timeout=30)
        assert whole.status_code == 200 and whole.content == data, base
        assert whole.headers["Accept-Ranges"] == "bytes", base
        modified = whole.headers["Last-Modified"]
        ranged = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=30)
        assert (ranged.status_code, ranged.headers["Content-Range"]) == (206, f"bytes 100-199/{size}"), base
        assert ranged.content == data[100:200], base
        tail = requests.get(url, headers={"Range": "bytes=-50"}, timeout=30)
        assert (tail.status_code, tail.content) == (206, data[-50:]), base
        beyond = requests.get(url, headers={"Range": f"bytes={size}-"}, timeout=30)
        assert (beyond.status_code, beyond.headers["Content-Range"]) == (416, f"bytes */{size}"), base
        unchanged = requests.get(url, headers={"If-Modified-Since": modified}, timeout=30)
        assert (unchanged.status_code, unchanged.content) == (304, b""), base
        older = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 10 * 86400))
        assert requests.get(url, headers={"If-Modified-Since": older}, timeout=30).status_code == 200, base
        index = requests.get(f"{swarm.controller.public_url}{base}/Packages", timeout=30)
        assert index.status_code == 200 and index.headers["Last-Modified"], base
        again = requests.get(
            f"{swarm.controller.public_url}{base}/Packages",
            headers={"If-Modified-Since": index.headers["Last-Modified"]},
            timeout=30,
        )
        assert again.status_code == 304, base

        # Real clients: a download cut short and resumed, then a mirror's "only if newer".
        for name, resume in (
            ("curl", ["curl", "-sS", "--fail", "-C", "-", "-o"]),
            ("wget", ["wget", "-q", "-c", "-O"]),
        ):
            part = tmp_path / f"{name}{bases.index(base)}.gpkg.tar"
            part.write_bytes(data[: size // 3])
            subprocess.run([*resume, str(part), url], check=True, timeout=60, capture_output=True)
            assert part.read_bytes() == data, (name, base)
        newer = subprocess.run(
            ["curl", "-sS", "-z", str(part), "-o", str(tmp_path / "not-fetched"), "-w", "%{http_code}", url],
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        )
        assert newer.stdout == "304" and not (tmp_path / "not-fetched").exists(), base

    # Staging follows the releases' rule: regular files only, no listing, nothing hidden, no way out.
    (swarm.staging_pkgdir / ".Packages.tmp").write_text("partial")
    try:
        paths = (
            "/binhost/staging/",
            "/binhost/staging/swarm-test",
            "/binhost/staging/.Packages.tmp",
            # The prefix's make.conf, three levels up from its PKGDIR (var/cache/binpkgs).
            "/binhost/staging/%2e%2e/%2e%2e/%2e%2e/etc/portage/make.conf",
        )
        assert {path: raw_get(swarm, path) for path in paths} == dict.fromkeys(paths, 404)
    finally:
        (swarm.staging_pkgdir / ".Packages.tmp").unlink()


def test_no_cut_while_a_session_runs(swarm: Fleet) -> None:
    # No drone: the session's job waits, and the session runs.
    queued = swarm.queue("swarm-test/leaf-hello")
    assert queued["session"]["state"] == "running"
    message = refused(
        admin(swarm, "POST", "/admin/api/releases", {"force": True}), 409, "running", "complete"
    )
    assert queued["session"]["name"] in message
