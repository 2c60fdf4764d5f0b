"""Pushing a release to a mirror: rsync over SSH, then a verified,
atomic switch of the mirror's ``current`` link (the layout on a mirror is
in binhosts.py).

One push of release vX to ``[user@]host[:port]:/path``:

1. ``state``: make ``/path/releases`` and list it, read ``current``.
2. ``rsync -aH --delete`` of ``RELEASES_DIR/releases/vX/`` into
   ``releases/.vX.partial/`` (into ``releases/vX/`` itself when the mirror
   holds it already, e.g. after a rollback), with ``--link-dest=../vY``
   for the newest releases the mirror holds, so that a package unchanged
   since one of them is hard-linked on the mirror and does not travel. A
   partial directory left by an interrupted push is reused: what arrived
   then need not travel again.
3. ``verify``: ``sha256sum -c`` on the mirror, fed on stdin with every
   package's sha256 from the manifest (and those of the manifest, its
   signature and the Packages index, hashed here); a mismatch is copied
   again with ``--checksum`` once, then fails the push.
4. ``finish``: rename ``.vX.partial`` to ``vX``, then switch ``current``:
   a new link under a temporary name renamed over it (``mv -T``), so
   ``current`` always names a complete release, the old one or the new.
5. retention: releases the controller no longer has are removed, never
   the mirror's current or the one current before it, and partial
   directories of other pushes.

Every command line is an argv list. The only strings a shell reads are
the remote commands, fixed templates with ``shlex.quote``d paths (a
destination's path matches binhosts.PATH_RE as well); the host comes
after ``--`` (ssh) and is checked by oob.SshTarget. rsync's ``-e`` is
oob.ssh_argv up to and including ``--``, each word quoted for rsync's own
splitting; rsync appends the host and its server command after it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from swarm.controller import releasefiles
from swarm.controller.binhosts import Destination
from swarm.controller.errors import InvalidArgument
from swarm.controller.oob import SSH_FAILED, CommandResult, SshSettings, SshTarget, run, ssh_argv
from swarm.controller.releases import Manifest
from swarm.files import sha256_file

log = logging.getLogger(__name__)

# --link-dest to this many of the mirror's releases, newest first: a
# package comes back from an older release rarely; rsync allows 20.
LINK_DESTS = 3
# rsync gives up when no data moves for this long (its --timeout).
IO_TIMEOUT = 120
# A whole rsync run; the I/O timeout ends a stuck one much sooner.
RSYNC_TIMEOUT = 6 * 3600.0
# A remote command (listing, switch, removal); verifying reads every file.
COMMAND_TIMEOUT = 120.0
VERIFY_TIMEOUT = 3600.0
# The first line the state command prints: what a login shell prints before it is ignored.
STATE_MARK = "swarm-mirror-state"
# Files of a release the manifest has no sha256 for: hashed here before a push.
RELEASE_FILES = (releasefiles.MANIFEST, releasefiles.SIGNATURE, releasefiles.INDEX)
# A path sha256sum -c reads as one line, not a way out of the release.
_SAFE_RELATIVE = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[^\x00-\x1f\x7f\\]+\Z")


class PushError(Exception):
    """A push failed; the message says at which step and why."""


def releases_path(dest: Destination) -> str:
    """The mirror's ``releases/`` directory."""
    return f"{dest.path.rstrip('/')}/{releasefiles.RELEASES}"


@dataclass(frozen=True, slots=True)
class Listing:
    """What a mirror holds, as the state command printed it."""

    current: str | None
    releases: tuple[str, ...]  # complete releases, oldest first
    partials: tuple[str, ...]  # names of leftover directories (.vX.partial, .vX.deleting)


@dataclass(frozen=True, slots=True)
class RsyncStats:
    bytes_sent: int
    files_transferred: int
    files_total: int


@dataclass(frozen=True, slots=True)
class Progress:
    bytes_done: int
    files_done: int
    files_total: int


@dataclass(frozen=True, slots=True)
class PushResult:
    release: str
    releases: tuple[str, ...]  # what the mirror holds after the push and its retention
    removed: tuple[str, ...]  # releases retention removed
    bytes_sent: int  # rsync's own count (both passes when a mismatch was copied again)
    files_sent: int
    files_total: int


# -- command lines -------------------------------------------------------------------


def rsync_quote(word: str) -> str:
    """One word of rsync's ``-e`` value: rsync splits it on spaces and reads
    single quotes (a doubled one inside stands for itself), no backslashes."""
    return "'" + word.replace("'", "''") + "'"


def rsh(target: SshTarget, settings: SshSettings) -> str:
    """rsync's ``-e``: the ssh command line oob.ssh_argv makes, up to and
    including ``--`` (user and port are in it as ``-l`` and ``-p``); rsync
    puts the host and its server command after it."""
    argv = ssh_argv(target, settings, "true")
    end = len(argv) - 2  # drop the host and the command after "--"
    assert argv[end - 1] == "--" and argv[end] == target.host
    return " ".join(rsync_quote(word) for word in argv[:end])


def _rsync_host(target: SshTarget) -> str:
    return f"[{target.host}]" if ":" in target.host else target.host


def rsync_argv(
    dest: Destination,
    settings: SshSettings,
    source: Path,
    into: str,
    link_dests: Sequence[str],
    *,
    checksum: bool = False,
    rsync: str = "rsync",
) -> list[str]:
    """rsync of the release directory ``source`` into ``releases/<into>/`` on
    the mirror, hard-linking files unchanged since ``releases/<link>/``."""
    for name in (into, *link_dests):
        _check_entry(name)
    argv = [
        rsync,
        "--archive",
        "--hard-links",
        "--delete",
        "--stats",
        "--info=progress2",
        # The whole file list first: progress then knows the total.
        "--no-inc-recursive",
        f"--timeout={IO_TIMEOUT}",
        "--rsh",
        rsh(dest.ssh, settings),
    ]
    # Relative to the directory written into: its siblings.
    argv += [f"--link-dest=../{name}" for name in link_dests]
    if checksum:
        argv.append("--checksum")
    return [*argv, "--", f"{source}/", f"{_rsync_host(dest.ssh)}:{releases_path(dest)}/{into}/"]


def _check_entry(name: str) -> None:
    if not (releasefiles.VERSION_RE.match(name) or releasefiles.LEFTOVER_RE.match(name)):
        raise InvalidArgument(f"not a release directory name: {name[:80]!r}")


def state_command(dest: Destination) -> str:
    """Make ``releases/`` and print ``current``'s target and what ``releases/`` holds."""
    root, releases = shlex.quote(dest.path), shlex.quote(releases_path(dest))
    return (
        f"mkdir -p -- {releases} && cd -- {root} && printf '%s\\n' {STATE_MARK} && "
        f"printf 'current=%s\\n' \"$(readlink current)\" && ls -1A -- {releases}"
    )


def verify_command(dest: Destination, directory: str) -> str:
    """sha256sum -c of the lines on stdin, in ``releases/<directory>``; only failures are printed."""
    _check_entry(directory)
    return f"cd -- {shlex.quote(f'{releases_path(dest)}/{directory}')} && sha256sum --quiet --strict -c -"


def finish_command(dest: Destination, version: str, *, partial: bool) -> str:
    """Move the verified copy into place, then switch ``current`` to it by rename."""
    _check_entry(version)
    root = shlex.quote(dest.path)
    link_target = shlex.quote(f"{releasefiles.RELEASES}/{version}")
    steps = [f"cd -- {root}"]
    if partial:
        leftover = shlex.quote(f"{releasefiles.RELEASES}/.{version}{releasefiles.PARTIAL_SUFFIX}")
        steps.append(f"mv -T -- {leftover} {link_target}")
    steps += [f"ln -sfn -- {link_target} .current.tmp", "mv -T -- .current.tmp current"]
    return " && ".join(steps)


def remove_command(dest: Destination, names: Sequence[str]) -> str:
    for name in names:
        _check_entry(name)
    quoted = " ".join(shlex.quote(name) for name in names)
    return f"cd -- {shlex.quote(releases_path(dest))} && rm -rf -- {quoted}"


def check_list(manifest: Manifest, extra: dict[str, str]) -> bytes:
    """sha256sum -c input: every package of the manifest, and ``extra`` (path -> sha256)."""
    lines = []
    for path, digest in [*((p.path, p.sha256) for p in manifest.packages), *extra.items()]:
        if not _SAFE_RELATIVE.match(path) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise PushError(
                f"the manifest of {manifest.version} names an unusable path or sha256: {path[:200]!r}"
            )
        lines.append(f"{digest}  {path}\n")
    return "".join(lines).encode()


# -- reading rsync and the mirror -----------------------------------------------------------


def _number(text: str) -> int:
    return int(text.replace(",", "").replace(".", "").replace("'", ""))


_STATS = {
    "bytes_sent": re.compile(r"^Total bytes sent: ([\d,.']+)", re.M),
    "files_transferred": re.compile(r"^Number of (?:regular )?files transferred: ([\d,.']+)", re.M),
    "files_total": re.compile(r"^Number of files: ([\d,.']+)", re.M),
}


def parse_stats(output: str) -> RsyncStats:
    """rsync's --stats summary; ValueError when a figure is missing."""
    found = {}
    for name, pattern in _STATS.items():
        match = pattern.search(output)
        if match is None:
            raise ValueError(f"rsync printed no {name.replace('_', ' ')}")
        found[name] = _number(match.group(1))
    return RsyncStats(**found)


_PROGRESS = re.compile(r"^\s*([\d,.']+)\s+\d+%.*\((?:xfr#(\d+), )?(?:to|ir)-chk=(\d+)/(\d+)\)")


class ProgressReader:
    """rsync's --info=progress2 lines as they arrive (updates end in \\r)."""

    def __init__(self, report: Callable[[Progress], None]) -> None:
        self._report = report
        self._pending = b""

    def feed(self, data: bytes) -> None:
        parts = re.split(rb"[\r\n]", self._pending + data)
        self._pending = parts.pop()[-4096:]
        for part in parts:
            match = _PROGRESS.match(part.decode(errors="replace"))
            if match is not None:
                remaining, total = int(match.group(3)), int(match.group(4))
                self._report(Progress(_number(match.group(1)), total - remaining, total))


def version_order(version: str) -> tuple[str, int]:
    day, _, n = version.partition("-")
    return day, int(n or 0)


def parse_listing(output: str) -> Listing:
    """The state command's output, after its mark; ValueError without it."""
    lines = output.splitlines()
    if STATE_MARK not in lines:
        raise ValueError("the mirror's listing is missing")
    body = lines[lines.index(STATE_MARK) + 1 :]
    current = None
    if body and body[0].startswith("current="):
        name = Path(body.pop(0).removeprefix("current=")).name
        current = name if releasefiles.VERSION_RE.match(name) else None
    releases = sorted((n for n in body if releasefiles.VERSION_RE.match(n)), key=version_order)
    partials = sorted(n for n in body if releasefiles.LEFTOVER_RE.match(n))
    return Listing(current, tuple(releases), tuple(partials))


# -- the push ----------------------------------------------------------------------------


def _failed(step: str, result: CommandResult) -> PushError:
    if result.exit_code == SSH_FAILED:
        return PushError(f"{step}: ssh failed ({result.summary()})")
    return PushError(f"{step}: {result.summary()}")


class Pusher:
    """Pushes releases to one mirror. Stateless between pushes: the mirror's
    own listing says what it holds."""

    def __init__(self, dest: Destination, settings: SshSettings, *, rsync: str = "rsync") -> None:
        self.dest = dest
        self.settings = settings
        self.rsync = rsync

    async def _remote(self, step: str, command: str, timeout: float, stdin: bytes | None = None) -> str:
        result = await run(
            ssh_argv(self.dest.ssh, self.settings, command), timeout, stdin=stdin, output_limit=65536
        )
        if not result.ok:
            raise _failed(step, result)
        return result.output

    async def listing(self) -> Listing:
        output = await self._remote("listing the mirror", state_command(self.dest), COMMAND_TIMEOUT)
        try:
            return parse_listing(output)
        except ValueError as exc:
            raise PushError(f"listing the mirror: {exc}") from None

    async def _copy(
        self, source: Path, into: str, links: Sequence[str], checksum: bool, progress: ProgressReader
    ) -> RsyncStats:
        argv = rsync_argv(self.dest, self.settings, source, into, links, checksum=checksum, rsync=self.rsync)
        result = await run(argv, RSYNC_TIMEOUT, output_limit=65536, on_output=progress.feed)
        if not result.ok:
            raise _failed("rsync", result)
        try:
            return parse_stats(result.output)
        except ValueError as exc:
            raise PushError(f"rsync: {exc}") from None

    async def _verify(self, directory: str, checks: bytes) -> str:
        """ "" when every checksum matches, else what sha256sum said."""
        result = await run(
            ssh_argv(self.dest.ssh, self.settings, verify_command(self.dest, directory)),
            VERIFY_TIMEOUT,
            stdin=checks,
        )
        if result.ok:
            return ""
        if result.exit_code == SSH_FAILED or result.exit_code is None:
            raise _failed("verifying checksums", result)
        return result.summary()

    async def push(
        self,
        source: Path,
        manifest: Manifest,
        *,
        keep: Collection[str],
        on_progress: Callable[[Progress], None] = lambda progress: None,
    ) -> PushResult:
        """Push ``source`` (the release directory of ``manifest``) and make it
        the mirror's current release; then remove releases not in ``keep``
        (the controller's), never the mirror's current or previous one."""
        version = manifest.version
        extra = {}
        for name in RELEASE_FILES:
            extra[name] = (await asyncio.to_thread(sha256_file, source / name))[0]
        checks = check_list(manifest, extra)
        before = await self.listing()
        held = version in before.releases
        into = version if held else f".{version}{releasefiles.PARTIAL_SUFFIX}"
        # A release the mirror holds is its own basis: with --link-dest rsync
        # would replace its files by links to a look-alike (same size and
        # time) of another release.
        links = [] if held else list(reversed(before.releases))[:LINK_DESTS]
        progress = ProgressReader(on_progress)
        stats = await self._copy(source, into, links, False, progress)
        sent, files = stats.bytes_sent, stats.files_transferred
        mismatch = await self._verify(into, checks)
        if mismatch:
            log.warning(
                "mirror %s: %s does not match its manifest (%s); copying again", self.dest, into, mismatch
            )
            again = await self._copy(source, into, links, True, progress)
            sent, files = sent + again.bytes_sent, files + again.files_transferred
            mismatch = await self._verify(into, checks)
            if mismatch:
                raise PushError(f"verifying checksums: {mismatch}")
        await self._remote(
            "switching current", finish_command(self.dest, version, partial=not held), COMMAND_TIMEOUT
        )
        held_now = sorted({*before.releases, version}, key=version_order)
        spare = {version, *([before.current] if before.current else [])}
        doomed = [v for v in held_now if v not in keep and v not in spare]
        leftovers = [p for p in before.partials if p != into]
        if doomed or leftovers:
            try:
                await self._remote(
                    "retention", remove_command(self.dest, [*doomed, *leftovers]), COMMAND_TIMEOUT
                )
            except PushError as exc:  # the release is in place all the same
                log.warning("mirror %s: %s", self.dest, exc)
                doomed = []
        return PushResult(
            release=version,
            releases=tuple(v for v in held_now if v not in doomed),
            removed=tuple(doomed),
            bytes_sent=sent,
            files_sent=files,
            files_total=stats.files_total,
        )
