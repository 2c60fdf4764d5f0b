"""What swarm-upgrade remembers on a client.

- ``<PORTAGE_CONFIGROOT>/etc/swarm-upgrade.conf`` (TOML, written by
  ``trust``): the controller's public URL, the release key's
  fingerprint and the network this machine is on (its binhosts are
  preferred; none: every binhost is a fallback alike). Configuration: it goes where /etc/portage goes.
- ``<EROOT>/var/lib/swarm-upgrade/``: ``state.json`` (the release applied
  and the ones applied before it, for rollback; a log of every apply and
  rollback) and ``manifests/<v>.json`` with its ``.asc``, the verified
  manifest of each release applied, so ``status`` computes drift without
  the controller. State of what is installed: it goes where the vdb goes.

Both are replaced atomically (write, fsync, rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm.cli.upgrade_binhosts import NETWORK_RE
from swarm.cli.upgrade_errors import EXIT_UNTRUSTED, EXIT_USAGE, UpgradeError
from swarm.files import write_atomic

# How many apply/rollback records the log keeps.
LOG_KEEP = 200


@dataclass(frozen=True, slots=True)
class Config:
    url: str
    fingerprint: str
    network: str = ""  # "" for none


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string for everything a URL or fingerprint holds.
    return json.dumps(value)


def save_config(path: Path, config: Config) -> None:
    text = (
        "# The controller this machine takes its releases from (written by swarm-upgrade trust).\n"
        f"url = {_toml_string(config.url)}\n"
        "# The release key: manifests must be signed by it.\n"
        f"fingerprint = {_toml_string(config.fingerprint)}\n"
        "# The network this machine is on: its binhosts first (none: every binhost alike).\n"
        f"network = {_toml_string(config.network)}\n"
    )
    write_atomic(path, text.encode())


def load_config(path: Path) -> Config:
    """The trusted controller, or UpgradeError(3) when ``trust`` has not run."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UpgradeError(
            f"no trusted controller ({path} is missing): run swarm-upgrade trust URL first", EXIT_UNTRUSTED
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UpgradeError(f"cannot read {path}: {exc}", EXIT_USAGE) from None
    url, fingerprint = data.get("url"), data.get("fingerprint")
    if not isinstance(url, str) or not isinstance(fingerprint, str) or not url or not fingerprint:
        raise UpgradeError(f"{path} needs url and fingerprint: run swarm-upgrade trust URL again", EXIT_USAGE)
    # Written before networks were (issue 17): none.
    network = data.get("network", "")
    if not isinstance(network, str) or (network and not NETWORK_RE.match(network)):
        raise UpgradeError(f"{path}: network is not a network name: {network!r}", EXIT_USAGE)
    return Config(url, fingerprint, network)


@dataclass(frozen=True, slots=True)
class State:
    """Releases applied, the installed one last (``stack``); rollback pops it."""

    stack: tuple[str, ...] = ()
    log: tuple[dict[str, Any], ...] = field(default=())

    @property
    def installed(self) -> str | None:
        return self.stack[-1] if self.stack else None

    @property
    def before(self) -> str | None:
        """The release applied before the installed one: what rollback returns to."""
        return self.stack[-2] if len(self.stack) > 1 else None

    def last_applied_at(self) -> float | None:
        for entry in reversed(self.log):
            if entry.get("version") == self.installed and entry.get("ok"):
                at = entry.get("at")
                return float(at) if isinstance(at, int | float) else None
        return None

    def applied(self, version: str) -> State:
        stack = self.stack if self.installed == version else (*self.stack, version)
        return State(stack, self.log)

    def rolled_back(self) -> State:
        return State(self.stack[:-1], self.log)

    def logged(self, action: str, version: str, ok: bool, detail: str = "") -> State:
        entry = {"action": action, "version": version, "at": time.time(), "ok": ok, "detail": detail}
        return State(self.stack, (*self.log, entry)[-LOG_KEEP:])


class StateDir:
    """<EROOT>/var/lib/swarm-upgrade."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def load(self) -> State:
        try:
            data = json.loads(self.state_file.read_bytes())
        except FileNotFoundError:
            return State()
        except (OSError, ValueError) as exc:
            raise UpgradeError(f"cannot read {self.state_file}: {exc}") from None
        stack = data.get("stack") if isinstance(data, dict) else None
        log = data.get("log", []) if isinstance(data, dict) else None
        if (
            not isinstance(stack, list)
            or not all(isinstance(v, str) for v in stack)
            or not isinstance(log, list)
        ):
            raise UpgradeError(f"{self.state_file} is malformed (no list of releases in it)")
        return State(tuple(stack), tuple(e for e in log if isinstance(e, dict)))

    def save(self, state: State) -> None:
        body = {"installed": state.installed, "stack": list(state.stack), "log": list(state.log)}
        write_atomic(self.state_file, json.dumps(body, indent=2).encode() + b"\n")

    def keep_manifest(self, version: str, manifest: bytes, signature: bytes) -> None:
        """Keep the verified manifest of an applied release (status reads it offline)."""
        write_atomic(self.path / "manifests" / f"{version}.json.asc", signature)
        write_atomic(self.path / "manifests" / f"{version}.json", manifest)

    def kept_manifest(self, version: str) -> tuple[bytes, bytes] | None:
        try:
            base = self.path / "manifests" / f"{version}.json"
            return base.read_bytes(), base.with_name(f"{version}.json.asc").read_bytes()
        except FileNotFoundError:
            return None

    def forget_manifests(self, keep: set[str]) -> None:
        folder = self.path / "manifests"
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name.removesuffix(".asc").removesuffix(".json") not in keep:
                    path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One apply or rollback at a time on a machine."""
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / "lock").open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UpgradeError(
                    f"another swarm-upgrade is running ({self.path / 'lock'} is held)"
                ) from None
            yield
