"""Binhost targets: where promoted releases are published, and which one
each machine should use.

This module is the contract the mirror pusher (mirrors.py), the web tier,
swarm-cli, the console, swarm-upgrade and the build queue are written
against (issue 17).

A target is either the controller's own binhost (kind ``local``, named
``controller``: always there, served by the public tier at
``PUBLIC_URL/binhost``, holding every release) or a mirror (kind
``rsync``) the controller pushes releases to over SSH + rsync. Each
target has a public ``url`` that clients fetch from, the ``networks`` it
serves (the names drones report as their network: ``lan``,
``tailscale``...; none means "nobody in particular", a fallback for all)
and a ``priority`` (0-999, higher preferred among targets of equal
standing).

Layout on a mirror (its destination directory), the same as the
controller's ``RELEASES_DIR``, so the same URLs work on both::

    <path>/releases/vX/            a copy of the release (unchanged files
                                   hard-linked to the previous release's
                                   with rsync --link-dest)
    <path>/releases/.vX.partial/   a push in progress
    <path>/current -> releases/vX  switched by rename once the copy is verified

so a client uses ``URL/current/`` (what is promoted) or
``URL/releases/vX/`` (a release pinned, swarm-upgrade's way).

Targets come from the admin API (``PUT /admin/api/binhosts/{name}``,
stored in the database table ``binhost_targets``) and from an optional
TOML file of ``[binhosts.NAME]`` tables applied at every start
(``--binhosts-file``), as drone access does (access.py). Everything is
validated when saved: a bad value is InvalidArgument with the reason, and
no shell string is ever built from these values without quoting (the
destination goes through oob.SshTarget and a strict path pattern).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from swarm.clock import SYSTEM, Clock
from swarm.config import ConfigError, read_toml
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound
from swarm.controller.events import EventLog
from swarm.controller.oob import SshTarget
from swarm.controller.store.records import BinhostRecord
from swarm.controller.store.runner import StoreRunner

log = logging.getLogger(__name__)

LOCAL_NAME = "controller"
# Where the public tier serves the controller's own releases (web/releases.py:
# /binhost/current/, /binhost/releases/vX/): the local target's default URL
# is PUBLIC_URL + this.
LOCAL_PATH = "/binhost"
KINDS = ("local", "rsync")
Kind = Literal["local", "rsync"]
# A target's name: its section in binrepos.conf answers, its directory in
# Portage's binhost cache on clients.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")
# A network's name, as drones report it (agent config ``network``).
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
PRIORITY_MAX = 999
# The absolute directory on a mirror: no '..', no characters a shell or
# rsync would read as anything but a path (it is quoted anyway).
PATH_RE = re.compile(r"^/(?:[A-Za-z0-9._+-]+/?)*\Z")

# How a mirror stands; the local target is always "healthy".
#   unknown      not checked since the controller started
#   healthy      serves the current release, checks pass
#   syncing      a push is running (it still serves what it held)
#   stale        holds an older release than current (a push failed or waits for a retry)
#   unreachable  the last health check could not reach it (HTTP or checksums failed)
#   disabled     enabled = false: never pushed to, never in an answer
Status = Literal["unknown", "healthy", "syncing", "stale", "unreachable", "disabled"]
STATUSES: tuple[Status, ...] = ("unknown", "healthy", "syncing", "stale", "unreachable", "disabled")


@dataclass(frozen=True, slots=True)
class BinhostTarget:
    """One binhost, as the admin set it."""

    name: str
    kind: Kind
    url: str  # public base URL (http or https); local: "" means PUBLIC_URL/binhost
    destination: str = ""  # rsync only: [user@]host[:port]:/absolute/path
    networks: tuple[str, ...] = ()
    priority: int = 0
    enabled: bool = True
    updated_at: float = 0.0
    updated_by: str = ""


@dataclass(frozen=True, slots=True)
class PushProgress:
    """A push under way."""

    release: str
    started_at: float
    files_total: int
    files_done: int
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class MirrorState:
    """What the controller knows of a target right now."""

    name: str
    status: Status
    release: str | None  # the release its ``current`` names, as last seen
    releases: tuple[str, ...]  # every release it holds, as last seen
    synced_at: float | None  # the end of the last successful push
    checked_at: float | None  # the last health check
    error: str  # why it is stale or unreachable ("" otherwise)
    bytes_sent: int  # by the last push (rsync's own count)
    files_sent: int  # files the last push transferred
    progress: PushProgress | None  # while syncing


def local_state(current: str | None, held: tuple[str, ...]) -> MirrorState:
    """The controller's own binhost: always healthy, serving every release it has."""
    return MirrorState(LOCAL_NAME, "healthy", current, held, None, None, "", 0, 0, None)


def unseen_state(name: str, status: Status = "unknown") -> MirrorState:
    """A mirror nothing is known of yet (or a disabled one): it holds nothing as far as we know."""
    return MirrorState(name, status, None, (), None, None, "", 0, 0, None)


class MirrorsAPI(Protocol):
    """What mirrors.Mirrors offers the web tier, swarm-cli's handlers, the
    build queue and binrepos.conf answers."""

    def states(self) -> dict[str, MirrorState]:
        """Every target's state, by name (the local one included)."""
        ...

    async def sync(self, name: str | None, *, by: str) -> list[str]:
        """Push the current release now to one mirror (or every enabled
        mirror when None); returns the names whose push started. Does not
        wait for the pushes. FailedPrecondition (409) when no release is
        current, the target is local or disabled; NotFound for an unknown
        name."""
        ...

    def usable(self, release: str | None = None) -> list[tuple[BinhostTarget, MirrorState]]:
        """Targets a client may use for ``release`` (None: the current
        one): enabled, and local or healthy and holding it. Stale and
        unreachable mirrors drop out until they catch up."""
        ...


# -- validation --------------------------------------------------------------------------

FIELDS = ("kind", "url", "destination", "networks", "priority", "enabled")
# POST /admin/api/binhosts/sync pushes to every mirror: no target takes that name.
RESERVED = frozenset({"sync"})
NETWORKS_MAX = 32
URL_MAX = 512
DESTINATION_MAX = 400
# Control characters and whitespace: a value with one could start a new line
# (a new section) in a binrepos.conf answer, or split an argument.
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f]")
SHOWN = 60


def shown(value: str) -> str:
    """A refused value as an error quotes it: short, control characters escaped."""
    return repr(value[:SHOWN]) + ("..." if len(value) > SHOWN else "")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where the pusher copies releases to: ssh to ``ssh``, into ``path``
    (absolute, normalized without a trailing slash)."""

    ssh: SshTarget
    path: str

    def __str__(self) -> str:
        return f"{self.ssh}:{self.path}"


def parse_destination(text: str) -> Destination:
    """``[user@]host[:port]:/absolute/path`` (an IPv6 host in brackets), or
    InvalidArgument with the reason."""
    if _UNSAFE.search(text):
        raise InvalidArgument("destination must not contain spaces or control characters")
    if len(text) > DESTINATION_MAX:
        raise InvalidArgument(f"destination is longer than {DESTINATION_MAX} characters")
    # The path has no ':' (PATH_RE): the last one ends the ssh part.
    remote, colon, path = text.rpartition(":")
    if not colon or not remote or not path.startswith("/"):
        raise InvalidArgument(
            f"destination {shown(text)} must be [user@]host[:port]:/absolute/path "
            "(the path after the last ':')"
        )
    if not PATH_RE.fullmatch(path):
        raise InvalidArgument(
            f"destination path {shown(path)}: letters, digits and . _ + - between slashes only"
        )
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise InvalidArgument("destination path must be a directory below /, not / itself")
    if any(p in (".", "..") for p in parts):
        raise InvalidArgument(f"destination path {shown(path)} must not have a '.' or '..' component")
    return Destination(SshTarget.parse(remote), "/" + "/".join(parts))


def destination_of(target: BinhostTarget) -> Destination:
    """The parsed destination of an rsync target (validated when it was
    saved; parsed again here so the pusher never handles a raw string)."""
    if target.kind != "rsync" or not target.destination:
        raise FailedPrecondition(f"binhost {target.name} is {target.kind}: it has no destination")
    return parse_destination(target.destination)


def check_url(text: str) -> str:
    """A public base URL: http(s), a host, no credentials, query or
    fragment; returned without a trailing slash."""
    if _UNSAFE.search(text):
        raise InvalidArgument("url must not contain spaces or control characters")
    if len(text) > URL_MAX:
        raise InvalidArgument(f"url is longer than {URL_MAX} characters")
    if not text.isascii():
        raise InvalidArgument("url must be ASCII: a host name in its xn-- form, other characters %-encoded")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"url {shown(text)}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidArgument(f"url {shown(text)} must start with http:// or https://")
    if not parts.hostname:
        raise InvalidArgument(f"url {shown(text)} has no host")
    if "@" in parts.netloc:
        raise InvalidArgument("url must not hold a user name or password: the mirror is public")
    if "?" in text or "#" in text:
        raise InvalidArgument(f"url {shown(text)} must not have a query (?) or fragment (#)")
    if port == 0:
        raise InvalidArgument(f"url {shown(text)}: port 0")
    if any(p in (".", "..") for p in parts.path.split("/")):
        raise InvalidArgument(f"url {shown(text)} must not have a '.' or '..' component")
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


def _networks(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(n, str) for n in value):
        raise InvalidArgument('networks must be a list of network names, like ["lan", "tailscale"]')
    if len(value) > NETWORKS_MAX:
        raise InvalidArgument(f"networks: at most {NETWORKS_MAX}")
    for network in value:
        if not NETWORK_RE.fullmatch(network):
            raise InvalidArgument(
                f"network {shown(network)}: a letter or digit, then letters, digits, '.', '_' or '-' "
                "(at most 64)"
            )
    return tuple(dict.fromkeys(value))


def _text(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string")
    return value.strip()


def validate(name: str, fields: Mapping[str, Any], *, by: str, now: float) -> BinhostTarget:
    """A target from the API's or the file's fields (a whole replacement:
    a field left out takes its default), or InvalidArgument with the reason."""
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"binhost name {shown(name)}: a lowercase letter, then lowercase letters, digits or '-' "
            "(at most 32)"
        )
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown field(s) {', '.join(unknown)[:100]}: use {', '.join(FIELDS)}")
    if name in RESERVED:
        raise InvalidArgument(
            f"binhost name {shown(name)} is reserved: POST /admin/api/binhosts/{name} is taken"
        )
    local = name == LOCAL_NAME
    kind = _text(fields, "kind") or ("local" if local else "rsync")
    if kind not in KINDS:
        raise InvalidArgument(f"kind must be one of {', '.join(KINDS)}, not {shown(kind)}")
    if local and kind != "local":
        raise InvalidArgument(f"{LOCAL_NAME} is the controller's own binhost: its kind is local")
    if not local and kind == "local":
        raise InvalidArgument(f"only {LOCAL_NAME}, the controller's own binhost, is local: use rsync")
    url = _text(fields, "url")
    if url:
        url = check_url(url)
    elif not local:
        raise InvalidArgument("url is required: the public base URL clients fetch the mirror's files from")
    destination = _text(fields, "destination")
    if local and destination:
        raise InvalidArgument(f"{LOCAL_NAME} serves the controller's own releases: it has no destination")
    if not local:
        if not destination:
            raise InvalidArgument("destination is required for rsync: [user@]host[:port]:/absolute/path")
        destination = str(parse_destination(destination))
    priority = fields.get("priority", 0)
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= PRIORITY_MAX:
        raise InvalidArgument(f"priority must be a whole number from 0 to {PRIORITY_MAX}")
    enabled = fields.get("enabled", True)
    if enabled is None:
        enabled = True
    if not isinstance(enabled, bool):
        raise InvalidArgument("enabled must be true or false")
    if local and not enabled:
        raise InvalidArgument(f"{LOCAL_NAME} cannot be disabled: it is every client's last fallback")
    return BinhostTarget(
        name=name,
        kind="local" if local else "rsync",
        url=url,
        destination=destination,
        networks=_networks(fields.get("networks")),
        priority=priority,
        enabled=enabled,
        updated_at=now,
        updated_by=by,
    )


def default_local() -> BinhostTarget:
    """The controller's own binhost as it is until an admin sets it."""
    return BinhostTarget(name=LOCAL_NAME, kind="local", url="")


def load_file(path: Path) -> dict[str, dict[str, Any]]:
    """``[binhosts.NAME]`` tables of a TOML file, each checked now (a bad
    file stops the controller at start, naming the file and the table)."""
    data = read_toml(path)
    unknown = sorted(set(data) - {"binhosts"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}: only [binhosts.NAME] is read")
    tables = data.get("binhosts", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: binhosts must be a table of [binhosts.NAME] tables")
    entries: dict[str, dict[str, Any]] = {}
    for name, fields in tables.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{path}: binhosts.{name} must be a table")
        try:
            validate(name, fields, by=f"file {path}", now=0.0)
        except InvalidArgument as exc:
            raise ConfigError(f"{path}: binhosts.{name}: {exc.message}") from None
        entries[name] = dict(fields)
    return entries


# -- the store's records ---------------------------------------------------------------------


def to_record(target: BinhostTarget) -> BinhostRecord:
    return BinhostRecord(
        name=target.name,
        kind=target.kind,
        url=target.url,
        destination=target.destination,
        networks=target.networks,
        priority=target.priority,
        enabled=target.enabled,
        updated_at=target.updated_at,
        updated_by=target.updated_by,
    )


def from_record(record: BinhostRecord) -> BinhostTarget:
    kind: Kind = "local" if record.kind == "local" else "rsync"
    return BinhostTarget(
        name=record.name,
        kind=kind,
        url=record.url,
        destination=record.destination,
        networks=tuple(record.networks),
        priority=record.priority,
        enabled=record.enabled,
        updated_at=record.updated_at,
        updated_by=record.updated_by,
    )


def _settings(target: BinhostTarget) -> BinhostTarget:
    """What an admin sets, without who and when."""
    return replace(target, updated_at=0.0, updated_by="")


# -- the targets ---------------------------------------------------------------------------

Listener = Callable[[str], None]


class BinhostTargets:
    """Every binhost target: the local one (always there) and the mirrors,
    kept in memory and in the store. Listeners (the pusher) are called with
    a target's name after each change: saved, deleted, or set by the file."""

    def __init__(
        self,
        runner: StoreRunner,
        events: EventLog,
        *,
        file_targets: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self._runner = runner
        self._events = events
        self._file = {name: dict(fields) for name, fields in (file_targets or {}).items()}
        self._clock = clock
        self._targets: dict[str, BinhostTarget] = {LOCAL_NAME: default_local()}
        self._listeners: list[Listener] = []
        # Where the public tier serves the controller's own binhost (app.py sets it
        # once the tier listens): the local target's URL unless the admin set one.
        self.local_url = ""

    async def start(self) -> None:
        """Loads the store, then applies the file: the file wins at every start."""
        for record in await self._runner.call(self._runner.store.list_binhosts):
            self._targets[record.name] = from_record(record)
        now = self._clock.time()
        for name, fields in self._file.items():
            target = validate(name, fields, by="config file", now=now)
            old = self._targets.get(name)
            if old is not None and _settings(old) == _settings(target):
                continue
            await self._save(target)
            log.info("binhost %s set by the binhosts file", name)

    # -- reading ------------------------------------------------------------------

    def list(self) -> list[BinhostTarget]:
        """The local target first, then the mirrors by name."""
        return sorted(self._targets.values(), key=lambda t: (t.name != LOCAL_NAME, t.name))

    def get(self, name: str) -> BinhostTarget:
        target = self._targets.get(name)
        if target is None:
            raise NotFound(f"no binhost named {shown(name)}")
        return target

    def url_of(self, target: BinhostTarget) -> str:
        """The URL clients fetch from: the local target's own default resolved."""
        return target.url or self.local_url

    def resolved(self, target: BinhostTarget) -> BinhostTarget:
        return target if target.url else replace(target, url=self.local_url)

    # -- changing ------------------------------------------------------------------

    async def put(self, name: str, fields: Mapping[str, Any], *, by: str) -> BinhostTarget:
        """Creates or replaces the target whole (InvalidArgument with the reason)."""
        target = validate(name, fields, by=by, now=self._clock.time())
        await self._save(target)
        return target

    async def delete(self, name: str, *, by: str) -> BinhostTarget:
        if name == LOCAL_NAME:
            raise FailedPrecondition(f"{LOCAL_NAME} is the controller's own binhost: it cannot be deleted")
        target = self.get(name)
        await self._runner.call(self._runner.store.delete_binhost, name)
        del self._targets[name]
        self._events.emit("binhost_deleted", f"binhost {name} deleted by {by}", name=name, by=by)
        self._notify(name)
        return target

    async def _save(self, target: BinhostTarget) -> None:
        await self._runner.call(self._runner.store.put_binhost, to_record(target))
        self._targets[target.name] = target
        self._events.emit(
            "binhost_saved",
            f"binhost {target.name} ({target.kind}) set by {target.updated_by}",
            name=target.name,
            by=target.updated_by,
            kind=target.kind,
            url=target.url,
            destination=target.destination,
            networks=list(target.networks),
            priority=target.priority,
            enabled=target.enabled,
        )
        self._notify(target.name)

    # -- listeners -------------------------------------------------------------------

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Calls ``callback(name)`` after every change (on the event loop, so it
        must not block); returns the unsubscribe. The target as it is now is
        ``get(name)``, which raises NotFound once it was deleted."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def _notify(self, name: str) -> None:
        for callback in list(self._listeners):
            try:
                callback(name)
            except Exception:
                log.exception("a binhost listener failed on %s", name)
