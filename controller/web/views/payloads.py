"""Views of payloads (controller/payloads.py): the versions uploaded, a
deploy started, and each drone's versions against what it is to run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from swarm.clock import iso
from swarm.controller.payloads import DeployStarted, DroneVersion
from swarm.controller.store.records import PayloadRecord
from swarm.controller.web.views.base import Doc, Format, Length, Range, Timestamp
from swarm.payloadsig import fingerprint

Kind = Literal["agent", "agent-config", "portage-config"]
Version = Annotated[int, Range(1), Doc("monotonic per kind, from 1")]
Sha256 = Annotated[str, Length(64, 64), Doc("hex SHA-256 of the payload's bytes")]
PayloadState = Literal["uploaded", "staged", "deployed"]
DroneState = Annotated[
    str,
    Doc(
        "how its latest deploy went: sent, waiting (a build runs), fetching, applied, refused, "
        'failed, rolled_back, timed_out or unsent ("" when only its Hello told us of it)'
    ),
]


@dataclass(frozen=True, slots=True)
class PayloadView:
    kind: Kind
    version: Version
    sha256: Sha256
    size: Annotated[int, Range(1), Doc("bytes")]
    uploaded_by: Annotated[str, Doc('"admin:NAME"')]
    uploaded_at: Annotated[str, Format("date-time")]
    notes: str
    state: PayloadState


def payload_view(r: PayloadRecord) -> PayloadView:
    at = iso(r.uploaded_at)
    assert at is not None
    return PayloadView(r.kind, r.version, r.sha256, r.size, r.uploaded_by, at, r.notes, r.state)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class PayloadsView:
    payloads: Annotated[tuple[PayloadView, ...], Doc("by kind, newest version first")]
    public_key: Annotated[str, Doc("the payload key's public half (ed25519, hex) the drones pin")]
    key_fingerprint: Annotated[str, Doc("a short name for it")]


def payloads_view(records: list[PayloadRecord], public_key: bytes) -> PayloadsView:
    return PayloadsView(tuple(payload_view(r) for r in records), public_key.hex(), fingerprint(public_key))


@dataclass(frozen=True, slots=True)
class DeployView:
    deploy_id: Annotated[str, Doc("names the deploy in its events")]
    kind: Kind
    version: Version
    rollback: bool
    drones: Annotated[tuple[str, ...], Doc("the drones it goes to, by name")]


def deploy_view(d: DeployStarted) -> DeployView:
    return DeployView(d.deploy_id, d.kind, d.version, d.rollback, d.drones)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class DroneVersionView:
    drone: Annotated[str, Doc("the drone's name")]
    drone_id: str
    kind: Kind
    expected: Annotated[int, Range(0), Doc("the version deployed to it (0: none)")]
    running: Annotated[int, Range(0), Doc("the version it says it runs (0: what it was installed with)")]
    drift: Annotated[bool, Doc("a version was deployed to it and it runs another")]
    state: DroneState
    reason: Annotated[
        str,
        Doc(
            "why it is so, one line: the drone's reason for a refusal or failure, or the "
            "controller's (timed out, not sent, settled after a restart)"
        ),
    ]
    deploy_id: str
    updated_at: Timestamp


@dataclass(frozen=True, slots=True)
class DroneVersionsView:
    versions: Annotated[tuple[DroneVersionView, ...], Doc("by drone name, then kind")]
    drifting: Annotated[int, Range(0), Doc("how many of them drift")]


def drone_versions_view(found: list[DroneVersion]) -> DroneVersionsView:
    views = tuple(
        DroneVersionView(
            v.drone,
            v.drone_id,
            v.kind,  # type: ignore[arg-type]
            v.expected,
            v.running,
            v.drift,
            v.state,
            v.reason,
            v.deploy_id,
            iso(v.updated_at) if v.updated_at else None,
        )
        for v in found
    )
    return DroneVersionsView(views, sum(1 for v in views if v.drift))
