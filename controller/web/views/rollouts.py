"""Views of payload rollouts (controller/rollout.py): the plan, the
strategy and each planned drone's progress, for the console's Payloads
page and swarm-cli payload status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from swarm.clock import iso
from swarm.controller.rollout import Rollout
from swarm.controller.web.views.base import Doc, Format, Range, Timestamp
from swarm.controller.web.views.payloads import Kind, Version

RolloutState = Literal["running", "paused", "aborted", "failed", "done", "rolling_back", "rolled_back"]
RolloutDroneState = Annotated[
    Literal["pending", "sent", "passed", "failed", "skipped", "rolled_back", "kept"],
    Doc(
        "pending (its batch has not come), sent (deploying, or at its gate), passed (online, healthy, "
        "running the version), failed (the reason says why), skipped (not in a batch: the reason says "
        "why), rolled_back (back to its previous version), kept (a rollback left it on the version)"
    ),
]


@dataclass(frozen=True, slots=True)
class StrategyView:
    canary: Annotated[int, Range(0), Doc("drones deployed first, alone (batch 0)")]
    batch: Annotated[int, Range(1), Doc("drones in each batch after the canaries")]
    pause_s: Annotated[float, Range(0), Doc("seconds between batches")]
    gate_timeout_s: Annotated[
        float, Range(1), Doc("seconds a drone has to apply it and be online, healthy and running it")
    ]
    auto_rollback: Annotated[bool, Doc("a failure rolls back the drones that took it")]


@dataclass(frozen=True, slots=True)
class TargetView:
    all: bool
    network: Annotated[str, Doc('the network\'s drones ("" unless chosen so)')]
    drones: Annotated[tuple[str, ...], Doc("the drones named (empty unless chosen so)")]


@dataclass(frozen=True, slots=True)
class RolloutDroneView:
    drone: Annotated[str, Doc("the drone's name")]
    drone_id: str
    batch: Annotated[int, Range(-1), Doc("0: the canaries (when canary > 0); -1: skipped")]
    state: RolloutDroneState
    previous: Annotated[int, Range(0), Doc("the version it ran when the rollout started (0: none deployed)")]
    reason: str
    deploy_id: Annotated[str, Doc("its latest deploy (payload_* events, drones/versions)")]


@dataclass(frozen=True, slots=True)
class RolloutView:
    id: Annotated[str, Doc("names the rollout in its rollout_* events")]
    kind: Kind
    version: Version
    rollback: Annotated[bool, Doc("each deploy is signed as a rollback (to an older version)")]
    state: RolloutState
    reason: Annotated[str, Doc("why it is paused, failed, aborted or rolled back")]
    strategy: StrategyView
    target: TargetView
    batches: Annotated[int, Range(0), Doc("how many batches the plan has")]
    next_batch: Annotated[int, Range(0), Doc("the first batch not yet passed (= batches when done)")]
    next_batch_at: Annotated[
        Timestamp,
        Doc(
            "when the pause before next_batch ends and it starts (null: not in a pause; "
            "next_batch is in the store by then)"
        ),
    ]
    drones: Annotated[tuple[RolloutDroneView, ...], Doc("the plan: by batch, then name; skipped ones last")]
    started_by: Annotated[str, Doc('"admin:NAME"')]
    created_at: Annotated[str, Format("date-time")]
    updated_at: Annotated[str, Format("date-time")]


@dataclass(frozen=True, slots=True)
class RolloutsView:
    rollouts: Annotated[tuple[RolloutView, ...], Doc("newest first")]


def rollout_view(r: Rollout) -> RolloutView:
    created, updated = iso(r.created_at), iso(r.updated_at)
    assert created is not None and updated is not None
    s, t = r.strategy, r.target
    order = sorted(r.drones, key=lambda d: (d.batch < 0, d.batch, d.name))
    return RolloutView(
        r.id,
        r.kind,  # type: ignore[arg-type]
        r.version,
        r.rollback,
        r.state,  # type: ignore[arg-type]
        r.reason,
        StrategyView(s.canary, s.batch, s.pause_s, s.gate_timeout_s, s.auto_rollback),
        TargetView(t.all, t.network, t.drones),
        r.batches,
        r.next_batch,
        iso(r.next_batch_at),
        tuple(
            RolloutDroneView(d.name, d.drone_id, d.batch, d.state, d.previous, d.reason, d.deploy_id)  # type: ignore[arg-type]
            for d in order
        ),
        r.started_by,
        created,
        updated,
    )


def rollouts_view(found: list[Rollout]) -> RolloutsView:
    return RolloutsView(tuple(rollout_view(r) for r in found))
