"""Out-of-band access per drone: its type as the admin sees it, how to
reach it over SSH, and how its hypervisor host reboots it.

Settings come from the admin API (``PUT /admin/api/drones/{id}``, stored
in the database) and from an optional TOML file applied at every start
(``[drones.NAME]`` tables, by drone name or id). Everything is validated
when it is saved, so the healer never meets a bad template at 3 a.m.

``"local"`` (run the command on the controller's own machine, next to its
CA key and database) is the file's to give, never the API's: an admin key
must not be a shell on the controller (``from_api``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarm.config import ConfigError, read_toml
from swarm.controller.errors import InvalidArgument
from swarm.controller.oob import SshTarget, reboot_template
from swarm.controller.store.records import AccessRecord

DRONE_TYPES = ("lxc", "qemu", "bare-metal", "unknown")
REBOOTABLE = frozenset({"lxc", "qemu"})
# Runs the command on the controller's own machine, without SSH: for drones
# that live there (the demo, a lab on one box).
LOCAL = "local"
VMID_RE = re.compile(r"[0-9]{1,9}")
FIELDS = ("type", "ssh", "host", "vmid", "reboot")


def validate(drone_id: str, fields: Mapping[str, Any], *, by: str, now: float | None = None) -> AccessRecord:
    """An access record from the API's or the file's fields, or InvalidArgument."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown field(s) {', '.join(unknown)[:100]}: use {', '.join(FIELDS)}")
    values: dict[str, str] = {}
    for key in FIELDS:
        value = fields.get(key, "")
        if value is None:
            value = ""
        if isinstance(value, int) and not isinstance(value, bool) and key == "vmid":
            value = str(value)
        if not isinstance(value, str):
            raise InvalidArgument(f"{key} must be a string")
        values[key] = value.strip()
    drone_type = values["type"]
    if drone_type and drone_type not in DRONE_TYPES:
        raise InvalidArgument(f"type must be one of {', '.join(DRONE_TYPES)}, not {drone_type[:30]!r}")
    for key in ("ssh", "host"):
        if values[key] and values[key] != LOCAL:
            SshTarget.parse(values[key])
    if values["vmid"] and not VMID_RE.fullmatch(values["vmid"]):
        raise InvalidArgument("vmid must be a number")
    if values["reboot"]:
        template = reboot_template(values["reboot"])
        if "vmid" in template.fields and not values["vmid"]:
            raise InvalidArgument("this reboot command needs the drone's vmid")
        if not values["host"]:
            raise InvalidArgument("a reboot command runs on the hypervisor host: set host too")
    return AccessRecord(
        drone_id=drone_id,
        drone_type=drone_type,
        ssh=values["ssh"],
        host=values["host"],
        vmid=values["vmid"],
        reboot=values["reboot"],
        updated_at=time.time() if now is None else now,
        updated_by=by,
    )


def from_api(drone_id: str, fields: Mapping[str, Any], *, by: str, current: AccessRecord) -> AccessRecord:
    """validate() for the admin API, which may keep a ``"local"`` that the
    drones file set but never set one; and while ``host`` stays local, the
    reboot command (which runs on this machine then) stays the file's too."""
    record = validate(drone_id, fields, by=by)
    for key in ("ssh", "host"):
        if getattr(record, key) == LOCAL and getattr(current, key) != LOCAL:
            raise InvalidArgument(
                f'{key} = "local" runs commands on the controller\'s own machine: only the drones '
                "file or the command line can set it, not the API"
            )
    if record.host == LOCAL and record.reboot != current.reboot:
        raise InvalidArgument(
            'host is "local" (from the drones file): the reboot command runs on the controller\'s '
            "own machine, so only the drones file can change it"
        )
    return record


def load_file(path: Path) -> dict[str, dict[str, Any]]:
    """``[drones.KEY]`` tables of a TOML file, KEY a drone name or id, each
    checked now (a bad file stops the controller at start, with the line
    of why)."""
    data = read_toml(path)
    unknown = sorted(set(data) - {"drones"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}: only [drones.NAME] is read")
    drones = data.get("drones", {})
    if not isinstance(drones, dict):
        raise ConfigError(f"{path}: drones must be a table of [drones.NAME] tables")
    entries: dict[str, dict[str, Any]] = {}
    for key, fields in drones.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{path}: drones.{key} must be a table")
        try:
            validate(key, fields, by=f"file {path}")
        except InvalidArgument as exc:
            raise ConfigError(f"{path}: drones.{key}: {exc.message}") from None
        entries[key] = dict(fields)
    return entries
