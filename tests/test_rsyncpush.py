"""The mirror pusher's parts, in process (controller/rsyncpush.py,
mirrors.py): the command lines it builds, run for real where that is
cheap (rsync hands its ``-e`` words to a stand-in ssh that records them;
the remote commands run in a local shell on a hostile path), what it reads
of rsync's output, and the retry of a failed push (real ssh refused by a
closed port, time moved by a manual clock). The end-to-end push over real
sshd: tests/test_mirrors.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from swarm.controller.binhosts import BinhostTarget, BinhostTargets, Destination
from swarm.controller.errors import InvalidArgument
from swarm.controller.events import EventLog
from swarm.controller.mirrors import RETRY, Mirrors
from swarm.controller.oob import SshSettings, SshTarget, ssh_argv
from swarm.controller.releases import Manifest, Release, ReleasePackage, Releases, Repository, manifest_bytes
from swarm.controller.rsyncpush import (
    STATE_MARK,
    Progress,
    ProgressReader,
    PushError,
    check_list,
    finish_command,
    parse_listing,
    parse_stats,
    remove_command,
    rsync_argv,
    state_command,
    verify_command,
)

from fakes.clock import ManualClock
from support.sshd import free_port

V1, V2 = "v2026.12.04", "v2026.12.05"
HOSTILE = "m $(touch pwned) `touch pwned2`; 'q' \\ * %"
SHA = "ab" * 32

# From rsync 3.2 with --stats (thousands separators as it prints them).
STATS = """
Number of files: 1,105 (reg: 1,000, dir: 105)
Number of created files: 1,105 (reg: 1,000, dir: 105)
Number of deleted files: 0
Number of regular files transferred: 1,000
Total file size: 20,480,000 bytes
Total transferred file size: 20,480,000 bytes
Literal data: 20,480,000 bytes
Matched data: 0 bytes
File list size: 0
File list generation time: 0.001 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 20,532,171
Total bytes received: 19,041

sent 20,532,171 bytes  received 19,041 bytes  8,220,484.80 bytes/sec
total size is 20,480,000  speedup is 1.00
"""


def manifest(version: str, *paths: str) -> Manifest:
    packages = tuple(ReleasePackage(f"c/{p}", "0", p, "", "", SHA, 1, "") for p in paths)
    return Manifest(version, 0.0, "", (), "p", Repository("r", "", None), "", packages, len(paths), "")


# -- command lines -----------------------------------------------------------------------


def test_rsyncs_rsh_reaches_ssh_word_for_word_with_the_host_after_dashes(tmp_path: Path) -> None:
    keys = tmp_path / "it's a key dir"
    keys.mkdir()
    record = tmp_path / "argv.json"
    fake_ssh = tmp_path / "fake ssh"
    fake_ssh.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\nsys.exit(255)\n"
    )
    fake_ssh.chmod(0o755)
    settings = SshSettings(
        ssh=str(fake_ssh), identity_file=keys / "id 1", known_hosts_file=keys / "known%hosts"
    )
    target = SshTarget("127.0.0.1", user="build", port=2222)
    dest = Destination(target, "/srv/bin-host")
    (tmp_path / "src").mkdir()
    argv = rsync_argv(dest, settings, tmp_path / "src", f".{V2}.partial", [V1])
    assert f"--link-dest=../{V1}" in argv and argv[-3] == "--"
    assert argv[-1] == f"127.0.0.1:/srv/bin-host/releases/.{V2}.partial/"
    done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert done.returncode != 0
    words = json.loads(record.read_text())
    # ssh's own words up to and including the host (its program is argv[0], not recorded).
    expected = ssh_argv(target, settings, "true")[1:-1]
    n = len(expected)
    assert words[:n] == expected and words[n - 2 : n] == ["--", "127.0.0.1"]
    assert "/srv/bin-host/releases/.v2026.12.05.partial/" in " ".join(words[n:])


def test_an_ipv6_host_goes_in_brackets_for_rsync() -> None:
    dest = Destination(SshTarget("fd00::5"), "/srv/m")
    argv = rsync_argv(dest, SshSettings(), Path("/r/releases/x"), V2, [])
    assert argv[-1] == f"[fd00::5]:/srv/m/releases/{V2}/"


def sh(command: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """A remote command as the mirror's login shell runs it (ssh runs ``$SHELL -c``)."""
    return subprocess.run(["sh", "-c", command], cwd=cwd, input=stdin, capture_output=True, timeout=30)


def test_remote_commands_quote_a_hostile_path_and_switch_current_by_rename(tmp_path: Path) -> None:
    root = tmp_path / HOSTILE
    dest = Destination(SshTarget("127.0.0.1"), str(root))  # past validation, which refuses it
    listed = sh(state_command(dest), tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert (root / "releases").is_dir()
    assert parse_listing(listed.stdout.decode()).releases == ()
    partial = root / "releases" / f".{V2}.partial"
    (partial / "c").mkdir(parents=True)
    (partial / "c" / "p.gpkg.tar").write_bytes(b"x")
    good = b"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881  c/p.gpkg.tar\n"
    assert sh(verify_command(dest, partial.name), tmp_path, good).returncode == 0
    bad = verify_command(dest, partial.name)
    failed = sh(bad, tmp_path, SHA.encode() + b"  c/p.gpkg.tar\n")
    assert failed.returncode == 1 and b"FAILED" in failed.stdout
    switched = sh(finish_command(dest, V2, partial=True), tmp_path)
    assert switched.returncode == 0, switched.stderr
    assert os.readlink(root / "current") == f"releases/{V2}" and (root / "current" / "c").is_dir()
    (root / "releases" / V1).mkdir()
    again = sh(finish_command(dest, V1, partial=False), tmp_path)
    assert again.returncode == 0 and os.readlink(root / "current") == f"releases/{V1}"
    listing = parse_listing(sh(state_command(dest), tmp_path).stdout.decode())
    assert listing.current == V1 and listing.releases == (V1, V2)
    assert sh(remove_command(dest, [V2]), tmp_path).returncode == 0
    assert sorted(p.name for p in (root / "releases").iterdir()) == [V1]
    # Nothing of the path ran as a command anywhere.
    assert not list(tmp_path.rglob("pwned*"))


@pytest.mark.parametrize("name", ["../etc", "v2026.12.05/../..", "v1; rm -rf /", "", ".v2026.12.05", "-rf"])
def test_names_that_are_not_release_directories_are_refused(name: str) -> None:
    dest = Destination(SshTarget("127.0.0.1"), "/srv/m")
    for build in (
        lambda: rsync_argv(dest, SshSettings(), Path("/r"), name, []),
        lambda: rsync_argv(dest, SshSettings(), Path("/r"), V2, [name]),
        lambda: remove_command(dest, [V1, name]),
        lambda: verify_command(dest, name),
        lambda: finish_command(dest, name, partial=True),
    ):
        with pytest.raises(InvalidArgument, match="not a release directory name"):
            build()


@pytest.mark.parametrize("path", ["../x.gpkg.tar", "/etc/passwd", "a/../../b", "a\nb", "a\\b", "c/./d"])
def test_a_manifest_path_sha256sum_could_misread_fails_the_push(path: str) -> None:
    with pytest.raises(PushError, match="unusable path"):
        check_list(manifest(V2, "c/p/p-1.gpkg.tar", path), {})


def test_the_check_list_names_every_package_and_the_release_files() -> None:
    lines = check_list(manifest(V2, "c/p/p-1.gpkg.tar"), {"Packages": "cd" * 32}).decode().splitlines()
    assert lines == [f"{SHA}  c/p/p-1.gpkg.tar", f"{'cd' * 32}  Packages"]


# -- rsync's output -----------------------------------------------------------------------


def test_stats_are_read_with_thousands_separators() -> None:
    stats = parse_stats(STATS)
    assert (stats.bytes_sent, stats.files_transferred, stats.files_total) == (20_532_171, 1000, 1105)
    with pytest.raises(ValueError, match="bytes sent"):
        parse_stats(STATS.replace("Total bytes sent", "Total bytes lost"))


def test_progress_lines_are_read_across_chunks_and_carriage_returns() -> None:
    seen: list[Progress] = []
    reader = ProgressReader(seen.append)
    stream = (
        b"\r      32,768   3%   31.25MB/s    0:00:00 (xfr#1, to-chk=104/105)"
        b"\r   1,048,576  50%   10.00MB/s    0:00:01 (xfr#52, to-chk=53/105)\r"
        b"   2,097,152 100%    9.00MB/s    0:00:02 (xfr#100, to-chk=0/105)\n\nNumber of files: 105\n"
    )
    for i in range(0, len(stream), 7):
        reader.feed(stream[i : i + 7])
    assert seen == [Progress(32768, 1, 105), Progress(1048576, 52, 105), Progress(2097152, 105, 105)]


def test_the_listing_is_read_after_its_mark() -> None:
    output = (
        f"Welcome to the mirror\ncurrent=nonsense\n{STATE_MARK}\ncurrent=releases/{V1}\n"
        f"{V2}\n{V1}\n.{V2}.partial\nlost+found\nv2026.12.05-1\n"
    )
    listing = parse_listing(output)
    assert listing.current == V1
    assert listing.releases == (V1, V2, "v2026.12.05-1")
    assert listing.partials == (f".{V2}.partial",)
    with pytest.raises(ValueError, match="missing"):
        parse_listing("Connection closed\n")


# -- retries -----------------------------------------------------------------------------------


@dataclass
class Events:
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def emit(self, type: str, message: str, **data: Any) -> None:
        self.seen.append((type, data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for type, data in self.seen if type == kind]


class OneMirror:
    """BinhostTargets as the pusher reads it: one mirror where nothing listens."""

    def __init__(self, port: int) -> None:
        self.target = BinhostTarget(
            "mirror-a", "rsync", f"http://127.0.0.1:{port}", f"nobody@127.0.0.1:{port}:/srv/m"
        )

    def list(self) -> list[BinhostTarget]:
        return [self.target]

    def get(self, name: str) -> BinhostTarget:
        assert name == self.target.name
        return self.target

    def subscribe(self, callback: Any) -> Any:
        return lambda: None


class OneRelease:
    """Releases as the pusher reads it: V2 current, its files on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest = manifest(V2)
        directory = root / "releases" / V2
        directory.mkdir(parents=True)
        for name, data in (("manifest.json", manifest_bytes(self.manifest)), ("manifest.json.asc", b"s")):
            (directory / name).write_bytes(data)
        (directory / "Packages").write_bytes(b"")

    def current(self) -> str:
        return V2

    def get(self, version: str) -> Release:
        return Release(self.manifest, "current", 0.0)

    def list_all(self) -> list[Release]:
        return [self.get(V2)]

    def path(self, version: str) -> Path:
        return self.root / "releases" / version

    def add_listener(self, callback: Any) -> Any:
        return lambda: None


def test_a_failed_push_is_retried_with_backoff_and_a_sync_does_not_wait(tmp_path: Path) -> None:
    clock = ManualClock()
    events = Events()
    port = free_port()  # nothing listens: ssh and HTTP are refused at once

    async def scenario() -> None:
        mirrors = Mirrors(
            cast(BinhostTargets, OneMirror(port)),
            cast(Releases, OneRelease(tmp_path)),
            cast(EventLog, events),
            SshSettings(),
            check_interval=3600,
            clock=clock,
        )
        await mirrors.start()
        try:

            async def failures(count: int) -> None:
                for _ in range(500):
                    if len(events.of("binhost_sync_failed")) >= count:
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError(
                    f"{count} failed pushes expected, saw {events.of('binhost_sync_failed')}"
                )

            # The first check finds it unreachable and wakes the worker.
            await failures(1)
            state = mirrors.states()["mirror-a"]
            assert state.status == "unreachable" and "connect" in state.error.lower()
            assert mirrors.usable() == []
            first = events.of("binhost_sync_failed")[0]
            assert first["attempt"] == 1 and "ssh failed" in first["error"]
            # A retry waits at least half its ceiling (5 s) and at most all of it.
            await clock.advance(RETRY.ceiling(0) * 0.5 - 0.01)
            await asyncio.sleep(0.2)
            assert len(events.of("binhost_sync_failed")) == 1
            await clock.advance(RETRY.ceiling(0) * 0.5 + 0.02)
            await failures(2)
            assert events.of("binhost_sync_failed")[1]["retry_within"] == RETRY.ceiling(1)
            # A sync runs now, whatever the backoff says.
            assert await mirrors.sync(None, by="admin:test") == ["mirror-a"]
            await failures(3)
        finally:
            await mirrors.stop()

    asyncio.run(scenario())
