"""Real emerge in Gentoo prefixes (tools/prefix.py) on the test overlay.

No fakes: Portage from PyPI builds the overlay's ebuilds with gcc, writes
gpkg binary packages, and a client prefix installs them over HTTP from a
binhost served on 127.0.0.1. Each emerge prints how long it took (see
them with ``pytest -s``).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

# tools/ is on sys.path through conftest.py.
from prefix import EmergeResult, Prefix, PrefixConfig, Role, create_prefix, run_emerge

from support.gpg import gnupg_home, gpg, new_key, readable_by_nobody, trust, verify_home

DIAMOND = ("diamond-base", "diamond-left", "diamond-right", "diamond-top")
# A few seconds each on an idle machine; generous for a loaded CI runner.
EMERGE_TIMEOUT = 240.0
pytestmark = pytest.mark.timeout(300)


def emerge(prefix: Prefix, *args: str, env: dict[str, str] | None = None) -> EmergeResult:
    result = run_emerge(prefix, *args, timeout=EMERGE_TIMEOUT, env=env)
    print(f"emerge {' '.join(args)} [{prefix.root.name}]: {result.duration:.1f}s, exit {result.returncode}")
    return result


def gpkg(prefix: Prefix, pn: str, version: str = "1") -> Path:
    # FEATURES=binpkg-multi-instance (a default) adds a build id: -1.
    return prefix.pkgdir / "swarm-test" / pn / f"{pn}-{version}-1.gpkg.tar"


class _Binhost(http.server.ThreadingHTTPServer):
    # Join request threads on server_close() so none outlives the test.
    daemon_threads = False

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        handler = functools.partial(_BinhostHandler, directory=str(directory))
        super().__init__(("127.0.0.1", 0), handler)


class _BinhostHandler(http.server.SimpleHTTPRequestHandler):
    server: _Binhost

    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)


@contextlib.contextmanager
def binhost(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve a PKGDIR read-only over HTTP; yields its URL and the paths requested."""
    server = _Binhost(directory)
    thread = threading.Thread(target=server.serve_forever, name="binhost", kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def emerged(result: EmergeResult, *, binary: bool = False) -> list[str]:
    """The packages emerge merged, in order: from source, or binaries when ``binary``."""
    start = ">>> Emerging binary (" if binary else ">>> Emerging ("
    return [
        line.split()[-1].removesuffix("::gentoo")
        for line in result.output.splitlines()
        if line.startswith(start)
    ]


def output_excerpt(result: EmergeResult) -> str:
    return result.output[-4000:]


def test_create_prefix_is_idempotent_and_updates(tmp_path: Path) -> None:
    config = PrefixConfig(tmp_path / "p", Role.DRONE)
    prefix = create_prefix(config)
    conf = prefix.config_root
    assert (conf / "make.profile" / "make.defaults").is_file()
    assert (prefix.root / "share/portage/config/make.globals").is_file()
    assert 'FEATURES="-sandbox' in (conf / "make.conf").read_text()
    assert "buildpkg" in next(
        line for line in (conf / "make.conf").read_text().splitlines() if line.startswith("FEATURES=")
    )
    assert not (conf / "binrepos.conf").exists()
    stamps = {p: p.stat().st_mtime_ns for p in prefix.root.rglob("*") if p.is_file()}

    assert create_prefix(config) == prefix
    assert {p: p.stat().st_mtime_ns for p in prefix.root.rglob("*") if p.is_file()} == stamps

    create_prefix(
        PrefixConfig(
            config.root,
            Role.DRONE,
            binhost="http://127.0.0.1:1/",
            package_env={"swarm-test/sleeper": {"SWARM_TEST_SLEEP": "0.5"}},
        )
    )
    binrepos = (conf / "binrepos.conf").read_text()
    assert "sync-uri = http://127.0.0.1:1/\nverify-signature = false\n" in binrepos
    assert "swarm-test/sleeper " in (conf / "package.env").read_text()
    create_prefix(config)
    assert not (conf / "binrepos.conf").exists()
    assert not (conf / "package.env").exists()
    assert not list((conf / "env").iterdir())


@pytest.fixture(scope="module")
def built_drone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Prefix, EmergeResult]:
    """A drone prefix in which the diamond's top (and so all four) was built."""
    prefix = create_prefix(PrefixConfig(tmp_path_factory.mktemp("drone"), Role.DRONE))
    return prefix, emerge(prefix, "--buildpkg", "swarm-test/diamond-top")


def test_drone_builds_the_diamond_and_its_deps(built_drone: tuple[Prefix, EmergeResult]) -> None:
    prefix, result = built_drone
    assert result.ok, output_excerpt(result)
    # Dependencies first: the base, then both sides (in either order), then the top.
    order = emerged(result)
    assert len(order) == 4, order
    assert order[0] == "swarm-test/diamond-base-1"
    assert set(order[1:3]) == {"swarm-test/diamond-left-1", "swarm-test/diamond-right-1"}
    assert order[3] == "swarm-test/diamond-top-1"
    index = (prefix.pkgdir / "Packages").read_text()
    for pn in DIAMOND:
        assert prefix.installed(f"swarm-test/{pn}-1"), pn
        path = gpkg(prefix, pn)
        with tarfile.open(path) as tar:
            assert f"{pn}-1-1/gpkg-1" in tar.getnames(), path
        assert f"CPV: swarm-test/{pn}-1\n" in index
    # The top really ran both sides, which really compiled against the base.
    assert (prefix.root / "usr/share/swarm-test/diamond-top.txt").read_text() == (
        "diamond-left built on diamond-base\ndiamond-right built on diamond-base\n"
    )
    ran = subprocess.run([prefix.root / "usr/bin/diamond-left"], capture_output=True, text=True, check=True)
    assert ran.stdout == "diamond-left built on diamond-base\n"


def test_broken_package_fails_with_its_message(tmp_path: Path) -> None:
    prefix = create_prefix(PrefixConfig(tmp_path / "drone", Role.DRONE))
    result = emerge(prefix, "--oneshot", "--buildpkg", "swarm-test/broken")
    assert result.returncode != 0
    assert "swarm-test/broken fails in src_compile on purpose" in result.output
    assert "(compile phase)" in result.output
    assert not prefix.installed("swarm-test/broken-1")
    assert not gpkg(prefix, "broken").exists()


def test_sleeper_takes_the_configured_time(tmp_path: Path) -> None:
    seconds = 2.0  # the ebuild's default is 1: seeing 2 proves the knob reached it
    prefix = create_prefix(
        PrefixConfig(
            tmp_path / "drone",
            Role.DRONE,
            package_env={"swarm-test/sleeper": {"SWARM_TEST_SLEEP": f"{seconds:g}"}},
        )
    )
    result = emerge(prefix, "--oneshot", "--buildpkg", "swarm-test/sleeper")
    assert result.ok, output_excerpt(result)
    assert result.duration >= seconds
    record = dict(
        line.split("=", 1)
        for line in (prefix.root / "usr/share/swarm-test/sleeper.txt").read_text().splitlines()
    )
    assert record["seconds"] == f"{seconds:g}"
    assert float(record["end"]) - float(record["start"]) >= seconds


def test_client_installs_from_the_binhost(built_drone: tuple[Prefix, EmergeResult], tmp_path: Path) -> None:
    drone, built = built_drone
    assert built.ok, output_excerpt(built)
    with binhost(drone.pkgdir) as (url, requests):
        client = create_prefix(PrefixConfig(tmp_path / "client", Role.CLIENT, binhost=url))
        result = emerge(client, "--getbinpkgonly", "swarm-test/diamond-top")
    assert result.ok, output_excerpt(result)
    assert ">>> Compiling source" not in result.output
    assert sorted(emerged(result, binary=True)) == [f"swarm-test/{pn}-1" for pn in DIAMOND]
    for pn in DIAMOND:
        assert f"/swarm-test/{pn}/{pn}-1-1.gpkg.tar" in requests, requests
        assert client.installed(f"swarm-test/{pn}-1"), pn
        assert (client.vdb / f"swarm-test/{pn}-1/BUILD_TIME").is_file()
    for path in ("usr/bin/diamond-top", "usr/bin/diamond-left", "usr/bin/diamond-right"):
        assert os.access(client.root / path, os.X_OK), path
    assert (client.root / "usr/include/swarm-test/diamond-base.h").is_file()
    assert (client.root / "usr/share/swarm-test/diamond-top.txt").read_text().startswith("diamond-left built")


def test_drone_pulls_a_built_dependency_from_the_binhost(
    built_drone: tuple[Prefix, EmergeResult], tmp_path: Path
) -> None:
    # Another drone built the base (and the rest of the diamond). This one is
    # told to build the left side as the agent's builder tells it: from source
    # even though a binary of it is on the binhost (--usepkg-exclude).
    first, built = built_drone
    assert built.ok, output_excerpt(built)

    with binhost(first.pkgdir) as (url, requests):
        second = create_prefix(PrefixConfig(tmp_path / "second", Role.DRONE, binhost=url))
        result = emerge(
            second,
            "--oneshot",
            "--buildpkg",
            "--usepkg",
            "--getbinpkg",
            "--usepkg-exclude=swarm-test/diamond-left",
            "=swarm-test/diamond-left-1",
        )
    assert result.ok, output_excerpt(result)
    # The dependency came from the binhost as a binary; the target was built.
    assert ">>> Emerging binary (1 of 2) swarm-test/diamond-base-1::gentoo" in result.output
    assert ">>> Emerging (2 of 2) swarm-test/diamond-left-1::gentoo" in result.output
    assert "/swarm-test/diamond-base/diamond-base-1-1.gpkg.tar" in requests
    assert "Compiling source in" in result.output
    assert second.installed("swarm-test/diamond-base-1")
    # Its own build of the left side (with a build id of its own, not necessarily -1).
    assert list((second.pkgdir / "swarm-test" / "diamond-left").glob("diamond-left-1-*.gpkg.tar"))
    # With binrepos.conf, fetched packages are cached under var/cache/binhost/<repo>:
    # the drone's PKGDIR holds only what it built itself.
    assert not gpkg(second, "diamond-base").exists()
    assert (
        second.root / "var/cache/binhost/swarm/swarm-test/diamond-base/diamond-base-1-1.gpkg.tar"
    ).is_file()


# -- signed binpkgs ------------------------------------------------------------


def test_signed_binpkgs_are_verified_by_the_client(tmp_path: Path) -> None:
    with gnupg_home(tmp_path / "signing") as signing, verify_home() as trusted, verify_home() as empty:
        fingerprint = new_key(signing)
        trust(trusted, gpg(signing, "--export", fingerprint))
        gpg(empty, "--list-keys")
        for home in (trusted, empty):
            readable_by_nobody(home)

        drone = create_prefix(
            PrefixConfig(
                tmp_path / "drone",
                Role.DRONE,
                gnupghome=trusted,
                signing_gnupghome=signing,
                signing_key=fingerprint,
            )
        )
        result = emerge(drone, "--oneshot", "--buildpkg", "swarm-test/leaf-script")
        assert result.ok, output_excerpt(result)
        with tarfile.open(gpkg(drone, "leaf-script")) as tar:
            assert "leaf-script-1-1/image.tar.zst.sig" in tar.getnames()

        with binhost(drone.pkgdir) as (url, _requests):
            good = create_prefix(PrefixConfig(tmp_path / "good", Role.CLIENT, binhost=url, gnupghome=trusted))
            accepted = emerge(good, "--getbinpkgonly", "swarm-test/leaf-script")
            bad = create_prefix(PrefixConfig(tmp_path / "bad", Role.CLIENT, binhost=url, gnupghome=empty))
            refused = emerge(bad, "--getbinpkgonly", "swarm-test/leaf-script")
    assert accepted.ok, output_excerpt(accepted)
    assert good.installed("swarm-test/leaf-script-1")
    assert refused.returncode != 0
    assert "GnuPG verification failed" in refused.output
    assert not bad.installed("swarm-test/leaf-script-1")
