"""swarm-upgrade's parts that need no controller nor Portage run: drift, the
manifest and index checks, binrepos.conf, the state, gpg's status lines,
the snapshot command line (tests/test_upgrade.py runs the whole command)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swarm.cli import upgrade_binhosts, upgrade_manifest
from swarm.cli.upgrade import build_parser
from swarm.cli.upgrade_binhosts import Entry, answer_path, entries, parse_answer, section_version
from swarm.cli.upgrade_binrepo import BEGIN, END, BinreposConf
from swarm.cli.upgrade_drift import Drifted, Installed, compare, installed_packages, world_packages
from swarm.cli.upgrade_errors import EXIT_FAILED, EXIT_UNTRUSTED, EXIT_USAGE, UpgradeError
from swarm.cli.upgrade_keyring import signature_problem
from swarm.cli.upgrade_manifest import Manifest, Package, check_index, parse_manifest
from swarm.cli.upgrade_portage import parse_envvar_output
from swarm.cli.upgrade_remote import parse_listing
from swarm.cli.upgrade_snapshot import snapper_command
from swarm.cli.upgrade_state import Config, State, load_config, save_config
from swarm.controller import binhosts, binrepos
from swarm.controller import releases as core

FPR = "0C928E44325ADC17043129956C65270E8ACEF256"
OTHER = "1BE616084259DD3481274008F1F538A889E83100"


def package(cpv: str, slot: str = "0", size: int = 100) -> Package:
    pn = cpv.split("/")[1]
    return Package(cpv, slot, f"{cpv.split('/')[0]}/{pn.rsplit('-', 1)[0]}/{pn}-1.gpkg.tar", "ab" * 32, size)


def manifest(*packages: Package, version: str = "v2026.12.05") -> Manifest:
    return Manifest(version, 0.0, "", tuple(packages), FPR)


def core_manifest_bytes(version: str) -> bytes:
    """manifest.json as the controller writes it."""
    return core.manifest_bytes(
        core.Manifest(
            version=version,
            created_at=1796492208.5,
            notes="weekly",
            sessions=("s1",),
            profile="swarm/amd64",
            repository=core.Repository("gentoo", "", None),
            kernel="",
            packages=(
                core.ReleasePackage(
                    "app-misc/foo-1.2-r1",
                    "0/1.2",
                    "app-misc/foo/foo-1.2-r1-1.gpkg.tar",
                    "b1",
                    "d",
                    "ab" * 32,
                    7,
                    "x",
                ),
            ),
            total_size=7,
            signing_key=FPR,
        )
    )


# -- the manifest ------------------------------------------------------------------------


def test_the_client_reads_the_manifest_the_controller_writes() -> None:
    assert upgrade_manifest.MANIFEST_FORMAT == core.MANIFEST_FORMAT
    assert upgrade_manifest.VERSION_RE.pattern == core.VERSION_RE.pattern
    read = parse_manifest(core_manifest_bytes("v2026.12.05-1"), "v2026.12.05-1")
    assert read == Manifest(
        "v2026.12.05-1",
        1796492208.5,
        "weekly",
        (Package("app-misc/foo-1.2-r1", "0/1.2", "app-misc/foo/foo-1.2-r1-1.gpkg.tar", "ab" * 32, 7),),
        FPR,
    )


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(format=2), "format 2"),
        (lambda d: d.pop("packages"), "packages is missing"),
        (lambda d: d["packages"][0].update(size="7"), "packages[0].size"),
        (lambda d: d["packages"][0].update(size=True), "packages[0].size"),
        (lambda d: d["packages"][0].update(cpv="foo"), "not a category/package-version"),
        (lambda d: d.update(created_at=None), "created_at"),
    ],
)
def test_a_malformed_manifest_is_one_clear_error(
    mutate: Callable[[dict[str, Any]], object], needle: str
) -> None:
    data = json.loads(core_manifest_bytes("v2026.12.05"))
    mutate(data)
    with pytest.raises(UpgradeError, match="malformed") as caught:
        parse_manifest(json.dumps(data).encode(), "v2026.12.05")
    assert needle in str(caught.value) and caught.value.code == EXIT_FAILED


def test_a_signed_manifest_of_another_release_does_not_stand_in() -> None:
    with pytest.raises(UpgradeError, match=r"is the manifest of v2026\.12\.01") as caught:
        parse_manifest(core_manifest_bytes("v2026.12.01"), "v2026.12.05")
    assert caught.value.code == EXIT_UNTRUSTED


def test_split_cpv_takes_portage_versions() -> None:
    assert upgrade_manifest.split_cpv("sys-kernel/gentoo-sources-6.6.21-r1") == (
        "sys-kernel/gentoo-sources",
        "6.6.21-r1",
    )
    assert upgrade_manifest.split_cpv("dev-lang/python-3.12.1_p2") == ("dev-lang/python", "3.12.1_p2")
    assert upgrade_manifest.split_cpv("x11-libs/gtk+-3.24.41") == ("x11-libs/gtk+", "3.24.41")
    with pytest.raises(ValueError, match="not a category/package-version"):
        upgrade_manifest.split_cpv("app-misc/foo")


def test_the_index_is_held_to_the_manifest() -> None:
    m = manifest(package("app-misc/foo-1"), package("app-misc/bar-2"))
    entries = [f"CPV: {p.cpv}\nPATH: {p.path}\nSIZE: {p.size}\nSHA1: 00" for p in m.packages]
    header = "ARCH: amd64\nPACKAGES: 2"
    check_index("\n\n".join([header, *entries]) + "\n\n", m)
    with pytest.raises(UpgradeError, match="lacks app-misc/bar-2") as caught:
        check_index("\n\n".join([header, entries[0]]), m)
    assert caught.value.code == EXIT_UNTRUSTED
    with pytest.raises(UpgradeError, match="disagrees with its manifest about app-misc/foo"):
        check_index("\n\n".join([header, entries[0].replace("SIZE: 100", "SIZE: 101"), entries[1]]), m)
    extra = "CPV: app-misc/evil-1\nPATH: app-misc/evil/evil-1-1.gpkg.tar\nSIZE: 1"
    with pytest.raises(UpgradeError, match="lists packages its manifest lacks: app-misc/evil-1"):
        check_index("\n\n".join([header, *entries, extra]), m)


# -- drift -------------------------------------------------------------------------------


def test_drift_is_another_version_of_an_installed_package_in_its_slot() -> None:
    m = manifest(
        package("app-misc/foo-2"),  # installed at 3: a downgrade
        package("app-misc/bar-1"),  # installed at 1: no drift
        package("dev-lang/py-3.12", slot="3.12/3.12"),  # slot 3.11 installed: another slot
        package("app-misc/new-1"),  # in the world file, not installed
        package("app-misc/unused-1"),  # neither: not drift
    )
    installed = [
        Installed("app-misc/foo-3", "0"),
        Installed("app-misc/bar-1", "0"),
        Installed("dev-lang/py-3.11.8", "3.11"),
        Installed("app-misc/local-5", "0"),
    ]
    result = compare(installed, {"app-misc/new", "app-misc/foo"}, m)
    assert result.drift == (Drifted("app-misc/foo", "0", "3", "2"),)
    assert result.missing == (Drifted("app-misc/new", "0", "", "1"),)
    assert set(result.outside) == {"dev-lang/py-3.11.8", "app-misc/local-5"}
    assert result.to_emerge == ("=app-misc/foo-2", "=app-misc/new-1")
    assert not compare([Installed("app-misc/foo-2", "0")], set(), m).to_emerge


def test_the_vdb_and_the_world_file_as_portage_writes_them(tmp_path: Path) -> None:
    vdb = tmp_path / "var/db/pkg"
    for pf, slot in (("app-misc/foo-1.2", "0/1.2\n"), ("dev-lang/py-3.12.1", "3.12")):
        (vdb / pf).mkdir(parents=True)
        (vdb / pf / "SLOT").write_text(slot)
    (vdb / "app-misc/-MERGING-bar-1").mkdir()  # half merged: not installed
    (vdb / "app-misc/baz-2").mkdir()  # no SLOT file
    assert installed_packages(vdb) == [
        Installed("app-misc/baz-2", "0"),
        Installed("app-misc/foo-1.2", "0"),
        Installed("dev-lang/py-3.12.1", "3.12"),
    ]
    assert installed_packages(tmp_path / "none") == []
    world = tmp_path / "world"
    world.write_text("app-misc/foo\n@system\ndev-lang/py:3.12\n\n# comment\n")
    assert world_packages(world) == {"app-misc/foo", "dev-lang/py"}
    assert world_packages(tmp_path / "no-world") == set()


# -- binrepos.conf -----------------------------------------------------------------------


def one(version: str, uri: str) -> list[Entry]:
    """The controller's own entry alone, as for a controller without mirrors."""
    return entries([], version, uri)


def test_binrepos_conf_as_a_directory_gets_a_file_of_ours(tmp_path: Path) -> None:
    conf = BinreposConf(tmp_path)
    (tmp_path / "binrepos.conf").mkdir()
    (tmp_path / "binrepos.conf/gentoobinhost.conf").write_text("[gentoobinhost]\nsync-uri = x\n")
    assert conf.followed() is None
    first = conf.point_at("v2026.12.01", one("v2026.12.01", "http://c:8100/binhost/releases/v2026.12.01/"))
    assert conf.followed() == "v2026.12.01"
    text = (tmp_path / "binrepos.conf/swarm-upgrade.conf").read_text()
    assert "[swarm-v2026.12.01]\nsync-uri = http://c:8100/binhost/releases/v2026.12.01/\n" in text
    assert "verify-signature = true\n" in text
    second = conf.point_at("v2026.12.05", one("v2026.12.05", "http://c:8100/binhost/releases/v2026.12.05/"))
    assert conf.followed() == "v2026.12.05" and "v2026.12.01" not in conf.target.read_text()
    second.restore()
    assert conf.followed() == "v2026.12.01"
    first.restore()
    assert sorted(p.name for p in (tmp_path / "binrepos.conf").iterdir()) == ["gentoobinhost.conf"]


def test_binrepos_conf_as_one_file_keeps_what_else_is_in_it(tmp_path: Path) -> None:
    path = tmp_path / "binrepos.conf"
    theirs = "[gentoobinhost]\npriority = 1\nsync-uri = https://example.invalid/binpkgs\n"
    path.write_text(theirs)
    conf = BinreposConf(tmp_path)
    snapshot = conf.point_at("v2026.12.01", one("v2026.12.01", "http://c/binhost/releases/v2026.12.01/"))
    conf.point_at("v2026.12.05", one("v2026.12.05", "http://c/binhost/releases/v2026.12.05/"))
    text = path.read_text()
    assert text.startswith(theirs) and text.count(BEGIN) == 1 and text.count(END) == 1
    assert "[swarm-v2026.12.05]" in text and "v2026.12.01" not in text
    assert conf.followed() == "v2026.12.05"
    snapshot.restore()
    assert path.read_text() == theirs


def test_a_missing_binrepos_conf_becomes_a_directory(tmp_path: Path) -> None:
    conf = BinreposConf(tmp_path)
    snapshot = conf.point_at("v2026.12.01", one("v2026.12.01", "http://c/binhost/releases/v2026.12.01/"))
    assert (tmp_path / "binrepos.conf/swarm-upgrade.conf").is_file()
    snapshot.restore()
    assert not (tmp_path / "binrepos.conf").exists(), "restore leaves no empty directory of ours behind"


V = "v2026.12.05-1"
ANSWER = f"""# binrepos.conf for network tailscale, release {V}
[swarm-{V}-lan-mirror]
sync-uri = http://lan:80/releases/{V}/
priority = 10
verify-signature = true

[swarm-{V}-ts-mirror]
sync-uri = https://ts.example.invalid/releases/{V}/
priority = 1010
verify-signature = false

[swarm-{V}-controller]
sync-uri = http://c:8100/binhost/releases/{V}/
priority = 10
"""


def test_the_answer_orders_the_entries_above_stock_binhosts_and_each_verifies(tmp_path: Path) -> None:
    chosen = entries(parse_answer(ANSWER, V), V, f"http://c:8100/binhost/releases/{V}/")
    # The answer's priorities, highest first, its order among equals; all above gentoobinhost's.
    assert [(e.binhost, e.priority) for e in chosen] == [
        ("ts-mirror", 9999),
        ("lan-mirror", 9998),
        ("controller", 9997),
    ]
    conf = BinreposConf(tmp_path)
    conf.point_at(V, chosen)
    text = conf.target.read_text()
    # verify-signature = false in the answer does not survive: a mirror is not trusted.
    assert text.count("verify-signature = true\n") == 3 and "= false" not in text
    assert conf.entries() == chosen and conf.followed() == V


def test_the_client_reads_the_answer_the_controller_renders(tmp_path: Path) -> None:
    def pair(name: str, url: str, networks: tuple[str, ...], priority: int) -> tuple[Any, Any]:
        target = binhosts.BinhostTarget(name, "rsync", url, "", networks, priority)
        return target, binhosts.MirrorState(name, "healthy", V, (V,), 1.0, 1.0, "", 0, 0, None)

    usable = [
        pair("controller", "http://c:8100/binhost", (), 0),
        pair("lan-mirror", "http://lan/", ("lan",), 500),
        pair("ts-mirror", "http://ts/a%20b/", ("tailscale",), 1),
    ]
    text = binrepos.render(usable, network="tailscale", release=V, now=0.0)
    chosen = entries(parse_answer(text, V), V, f"http://c:8100/binhost/releases/{V}/")
    assert [(e.binhost, e.sync_uri) for e in chosen] == [
        ("ts-mirror", f"http://ts/a%20b/releases/{V}/"),  # Portage's %% is one %
        ("lan-mirror", f"http://lan/releases/{V}/"),
        ("controller", f"http://c:8100/binhost/releases/{V}/"),  # named: not added again
    ]
    conf = BinreposConf(tmp_path)
    conf.point_at(V, chosen)
    assert "sync-uri = http://ts/a%%20b/" in conf.target.read_text() and conf.entries() == chosen


def test_without_the_controller_in_the_answer_it_is_the_last_fallback() -> None:
    mirrors_only = parse_answer(ANSWER.split("[swarm-" + V + "-controller]")[0], V)
    chosen = entries(mirrors_only, V, f"http://c:8100/binhost/releases/{V}/")
    assert [e.section for e in chosen] == [f"swarm-{V}-ts-mirror", f"swarm-{V}-lan-mirror", f"swarm-{V}"]
    assert (
        chosen[-1].sync_uri == f"http://c:8100/binhost/releases/{V}/" and chosen[-1].binhost == "controller"
    )


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("[swarm-lan]\nsync-uri = http://l/current/\n", "not a section of"),  # not pinned
        ("[swarm-v2026.12.01-lan]\nsync-uri = http://l/releases/v2026.12.01/\n", "not a section of"),
        (f"[gentoobinhost]\nsync-uri = http://l/releases/{V}/\n", "not a section of"),
        (f"[swarm-{V}-lan]\nsync-uri = file:///etc/\n", "no http(s) sync-uri"),
        (f"[swarm-{V}-lan]\nsync-uri = http://l/ x\n", "no http(s) sync-uri"),
        (f"[swarm-{V}-lan]\nsync-uri = http://l/\npriority = high\n", "not a number"),
    ],
)
def test_an_answer_that_is_not_one_release_s_binhosts_is_refused(answer: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_answer(answer, V)


def test_sections_and_download_caches_of_ours_name_their_release() -> None:
    assert section_version("swarm-v2026.12.05") == "v2026.12.05"
    assert section_version("swarm-v2026.12.05-2") == "v2026.12.05-2"
    assert section_version("swarm-v2026.12.05-2-lan-2") == "v2026.12.05-2"
    assert section_version("swarm-v2026.12.05-lan") == "v2026.12.05"
    assert section_version("gentoobinhost") is None and section_version("swarm-v1") is None


def test_the_client_names_networks_and_binhosts_as_the_controller_does() -> None:
    assert upgrade_binhosts.NETWORK_RE.pattern == binhosts.NETWORK_RE.pattern
    assert upgrade_binhosts.NAME_RE.pattern == binhosts.NAME_RE.pattern
    assert answer_path(V, "tailscale") == f"/api/v1/binrepos.conf?network=tailscale&release={V}"
    assert answer_path(V, "") == f"/api/v1/binrepos.conf?release={V}"


def test_trust_refuses_a_bad_network_name_and_the_config_keeps_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "swarm.cli.upgrade", "trust", "http://c:8100", "--network", "lan;rm -rf /"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == EXIT_USAGE and "not a network name" in done.stderr
    path = tmp_path / "swarm-upgrade.conf"
    save_config(path, Config("http://c:8100", FPR, "tailscale"))
    assert load_config(path) == Config("http://c:8100", FPR, "tailscale")
    path.write_text(f'url = "http://c:8100"\nfingerprint = "{FPR}"\n')  # written before networks
    assert load_config(path).network == ""
    path.write_text(f'url = "http://c:8100"\nfingerprint = "{FPR}"\nnetwork = "../x y"\n')
    with pytest.raises(UpgradeError, match="not a network name"):
        load_config(path)


# -- state, listings, gpg, snapper -------------------------------------------------------


def test_the_state_is_a_stack_rollback_pops() -> None:
    state = State().applied("v1").applied("v2").applied("v2").applied("v3")
    assert state.stack == ("v1", "v2", "v3") and state.installed == "v3" and state.before == "v2"
    back = state.rolled_back()
    assert back.installed == "v2" and back.before == "v1"
    assert State().before is None and State().applied("v1").before is None
    logged = back.logged("rollback", "v2", True)
    assert logged.log[-1]["action"] == "rollback" and logged.log[-1]["ok"] is True


def test_the_public_listing_names_the_current_release() -> None:
    body = {"current": "v2026.12.05", "previous": None, "releases": [{"version": "v2026.12.05"}]}
    listing = parse_listing(body)
    assert listing.current == "v2026.12.05" and listing.versions == ("v2026.12.05",)
    bodies: list[Any] = [{"releases": "x"}, {"current": "../etc", "releases": []}, []]
    for bad in bodies:
        with pytest.raises(ValueError):
            parse_listing(bad)


def test_portageq_envvar_lines() -> None:
    text = "EROOT=/tmp/c/\nFEATURES='a b c'\nEMPTY=\nBINPKG_GPG_VERIFY_GPG_HOME=/tmp/c/etc/portage/gnupg\n"
    assert parse_envvar_output(text) == {
        "EROOT": "/tmp/c/",
        "FEATURES": "a b c",
        "EMPTY": "",
        "BINPKG_GPG_VERIFY_GPG_HOME": "/tmp/c/etc/portage/gnupg",
    }


GOOD = [
    "[GNUPG:] NEWSIG",
    "[GNUPG:] GOODSIG 6C65270E8ACEF256 Swarm Release <r@example.invalid>",
    f"[GNUPG:] VALIDSIG {FPR} 2026-12-05 1796492215 0 4 0 22 10 00 {FPR}",
    "[GNUPG:] TRUST_FULLY 0 pgp",
]


def test_gpg_status_lines_say_what_is_wrong_with_a_signature() -> None:
    assert signature_problem(GOOD, FPR) == ""
    assert signature_problem([*GOOD[:3], "[GNUPG:] TRUST_ULTIMATE 0 pgp"], FPR) == ""
    assert "not the trusted release key" in signature_problem(GOOD, OTHER)
    assert "does not trust it" in signature_problem([*GOOD[:3], "[GNUPG:] TRUST_UNDEFINED 0 pgp"], FPR)
    assert "BAD signature" in signature_problem(["[GNUPG:] BADSIG 6C65270E8ACEF256 Swarm"], FPR)
    no_key = [f"[GNUPG:] ERRSIG F1F538A889E83100 22 10 01 1796492532 9 {OTHER}", "[GNUPG:] NO_PUBKEY F1F5"]
    assert "unknown key" in signature_problem(no_key, FPR)
    assert "no valid signature" in signature_problem(["[GNUPG:] NODATA 1"], FPR)
    assert "no valid signature" in signature_problem([], FPR)


def test_the_snapshot_command_line() -> None:
    assert snapper_command("/usr/bin/snapper", "swarm-upgrade rollback to v2026.12.01") == [
        "/usr/bin/snapper",
        "--no-dbus",
        "--config",
        "root",
        "create",
        "--type",
        "single",
        "--cleanup-algorithm",
        "number",
        "--print-number",
        "--description",
        "swarm-upgrade rollback to v2026.12.01",
    ]


def test_bad_usage_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["--eprefix", "/a", "status"]).eprefix == "/a"
    assert parser.parse_args(["status", "--eprefix", "/b"]).eprefix == "/b"
    assert parser.parse_args(["apply", "--release", "v2026.12.05-1"]).release == "v2026.12.05-1"
    for argv in ([], ["apply", "--bogus"], ["trust"], ["apply", "--release", "2026.12.05"]):
        with pytest.raises(SystemExit) as caught:
            parser.parse_args(argv)
        assert caught.value.code == EXIT_USAGE, argv
    with pytest.raises(UpgradeError, match="not a release version") as bad:
        upgrade_manifest.check_version("2026.12.05")
    assert bad.value.code == EXIT_USAGE


def test_swarm_upgrade_imports_nothing_of_the_controller() -> None:
    heavy = ("swarm.controller", "aiohttp", "peewee", "grpc", "asyncio")
    code = f"import sys, swarm.cli.upgrade; print(' '.join(n for n in {heavy!r} if n in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == []
