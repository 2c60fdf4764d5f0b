"""Applying what the controller deploys (ApplyPayload), one payload at a time.

    ApplyPayload --verify--> REFUSED (signature, expiry, drone, downgrade: why)
         |
         +-- a build runs --> WAITING ... the build ends (builds are never cut short)
         v
    FETCHING (Payloads.Fetch into STATE_DIR/payloads/fetch, resumed by offset)
         |--- size or sha256 not the signed ones --> REFUSED
         v
    agent-config / portage-config: keep, write, check --> APPLIED | FAILED (restored)
    agent: install beside the running one --> FAILED (nothing switched)
         '--> switch `current`, start the watchdog, exec the new version
                 new version's Welcome --> APPLIED (sent by the new process)
                 no Welcome in time, or it dies --> the watchdog restores the
                 previous one, which reports ROLLED_BACK

While a payload is applied, new builds are refused (the controller gives
them to another drone). A status the stream could not take is sent again
after the next Welcome. An applied agent-config takes effect by a restart
of the agent (the RestartService path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import grpc

from swarm.agent import configpayload, selfupdate, serde
from swarm.agent.builder import Builder
from swarm.agent.credentials import load_payload_key
from swarm.agent.payloadfetch import FetchFailed, fetch
from swarm.agent.payloadstate import PayloadState
from swarm.files import sha256_file
from swarm.payloadsig import AGENT, AGENT_CONFIG, PORTAGE_CONFIG, PayloadRefused, Signed, check_bytes, verify
from swarm.tasks import TaskSet
from swarm.v1 import gateway_pb2, payload_pb2

log = logging.getLogger(__name__)

State = payload_pb2.PayloadStatus.State
IDLE_POLL = 0.25
UNSENT = 16


def forget_other_fetches(keep: Path) -> None:
    """Delete what earlier fetches left (cut off, then never deployed again), but ``keep``."""
    if keep.parent.is_dir():
        for stale in keep.parent.iterdir():
            if stale != keep:
                stale.unlink(missing_ok=True)


class PayloadManager:
    def __init__(
        self,
        *,
        state_dir: Path,
        drone_id: str,
        state: PayloadState,
        builder: Builder | None,
        send: Callable[[gateway_pb2.AgentMessage], bool],
        channel: Callable[[], grpc.aio.Channel],
        config_path: Path,
        eprefix: str,
        emerge_info: Callable[[], Awaitable[tuple[bool, str]]],
        config_change: Callable[[], AbstractAsyncContextManager[object]],
        restart: Callable[[str], None],
        restart_argv: Callable[[], list[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state_dir = state_dir
        self._drone_id = drone_id
        self.state = state
        self._builder = builder
        self._send = send
        self._channel = channel
        self._config_path = config_path
        self._eprefix = eprefix
        self._emerge_info = emerge_info
        # Held around a portage-config's write, check and restore (HealthChecks.config_change).
        self._config_change = config_change
        self._restart = restart
        self._restart_argv = restart_argv
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._housekeeping = TaskSet("payloads")
        self._unsent: deque[gateway_pb2.AgentMessage] = deque(maxlen=UNSENT)

    # -- control ------------------------------------------------------------------

    def apply(self, request: payload_pb2.ApplyPayload) -> None:
        """Take an ApplyPayload from the control stream (answered with PayloadStatus)."""
        if self._task is not None and not self._task.done():
            self._status(
                serde.unverified_meta(request.meta),
                State.REFUSED,
                "another payload is being applied; deploy again when it is done",
            )
            return
        self._task = asyncio.create_task(self._apply(request), name="payload-apply")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._housekeeping.close()
        if self._builder is not None:
            self._builder.held = ""

    def connected(self) -> None:
        """After each Welcome: confirm a switch to this version, report what
        the watchdog undid, send again what the stream could not take."""
        version, _ = selfupdate.running_version()
        trial = selfupdate.read_trial(self._state_dir)
        # Not only the pid the trial began in: a supervisor may have started this version again.
        if (
            trial is not None
            and version
            and trial.version == version
            and selfupdate.claim_trial(self._state_dir, "confirmed") is not None
        ):
            log.info("agent payload version %d confirmed (connected within its window)", version)
            self._report(AGENT, version, State.APPLIED, "connected and welcomed", trial.deploy_id)
            self._prune(trial.previous)
        undone = selfupdate.read_rolled_back(self._state_dir)
        if undone is not None and (trial is None or trial.version != version):
            self._report(AGENT, undone.version, State.ROLLED_BACK, undone.reason, undone.deploy_id)
            selfupdate.forget_rolled_back(self._state_dir)
        while self._unsent:
            if not self._send(self._unsent[0]):
                return
            self._unsent.popleft()

    def _prune(self, previous: str) -> None:
        """Delete installed versions but this one and the one before (a rollback's target)."""
        keep = {str(selfupdate.running_version()[0]), previous}
        self._housekeeping.spawn(asyncio.to_thread(selfupdate.prune, self._state_dir, keep), "prune")

    # -- one payload ----------------------------------------------------------------

    def _report(self, kind: str, version: int, state: int, reason: str = "", deploy_id: str = "") -> None:
        message = serde.payload_status(kind, version, state, reason, deploy_id)
        if not self._send(message):
            self._unsent.append(message)

    def _status(self, meta: payload_pb2.PayloadMeta, state: int, reason: str = "") -> None:
        if state in (State.REFUSED, State.FAILED):
            log.warning("payload %s v%d %s: %s", meta.kind or "?", meta.version, State.Name(state), reason)
        else:
            log.info(
                "payload %s v%d: %s%s", meta.kind, meta.version, State.Name(state), reason and f" ({reason})"
            )
        self._report(meta.kind, meta.version, state, reason, meta.deploy_id)

    async def _apply(self, request: payload_pb2.ApplyPayload) -> None:
        signed = Signed(request.meta, request.signature)
        meta = serde.unverified_meta(request.meta)
        key = await asyncio.to_thread(load_payload_key, self._state_dir)
        if key is None:
            self._status(
                meta,
                State.REFUSED,
                "no payload key pinned (enrolled before payloads? it is pinned at the next renewal)",
            )
            return
        try:
            running = (
                self.state.running(meta.kind).version
                if meta.kind in (AGENT, AGENT_CONFIG, PORTAGE_CONFIG)
                else 0
            )
            meta = verify(key, signed, now=self._clock(), drone_id=self._drone_id, running=running)
        except PayloadRefused as exc:
            self._status(meta, State.REFUSED, str(exc))
            return
        try:
            if not await self._wait_idle(meta):
                return
            if self._builder is not None:
                self._builder.held = f"applying payload {meta.kind} v{meta.version}"
            self._status(meta, State.FETCHING)
            path = await self._fetch(meta)
            if path is None:
                return
            await self._install(meta, path, request.confirm_within_s)
        finally:
            if self._builder is not None:
                self._builder.held = ""

    async def _wait_idle(self, meta: payload_pb2.PayloadMeta) -> bool:
        builder = self._builder
        if builder is None or builder.current is None:
            return True
        self._status(meta, State.WAITING, f"waits for build {builder.current_build_id} to end")
        while builder.current is not None:
            if self._clock() >= meta.expires_at_unix:
                self._status(meta, State.REFUSED, "expired while waiting for the running build to end")
                return False
            await asyncio.sleep(IDLE_POLL)
        return True

    async def _fetch(self, meta: payload_pb2.PayloadMeta) -> Path | None:
        into = self._state_dir / "payloads" / "fetch" / f"{meta.kind}-{meta.version}-{meta.sha256[:16]}"
        await asyncio.to_thread(forget_other_fetches, into)
        try:
            await fetch(self._channel, meta.kind, meta.version, meta.size, into)
            sha256, size = await asyncio.to_thread(sha256_file, into)
            check_bytes(meta, size, sha256)
        except PayloadRefused as exc:
            into.unlink(missing_ok=True)
            self._status(meta, State.REFUSED, str(exc))
            return None
        except (FetchFailed, OSError) as exc:
            self._status(meta, State.FAILED, f"fetch failed: {exc}")
            return None
        return into

    async def _install(self, meta: payload_pb2.PayloadMeta, path: Path, confirm_within: int) -> None:
        if meta.kind == AGENT:
            try:
                await self._switch(meta, path, confirm_within)
            finally:
                await asyncio.to_thread(path.unlink, missing_ok=True)
            return
        data = await asyncio.to_thread(path.read_bytes)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        try:
            if meta.kind == AGENT_CONFIG:
                await asyncio.to_thread(configpayload.apply_agent_config, self._config_path, data)
            else:
                async with self._config_change():
                    await configpayload.apply_portage_config(
                        self._eprefix, data, self._emerge_info, asyncio.to_thread
                    )
            await asyncio.to_thread(self.state.record, meta.kind, meta.version, meta.sha256)
        except configpayload.ApplyFailed as exc:
            self._status(meta, State.FAILED, str(exc))
            return
        except OSError as exc:
            self._status(meta, State.FAILED, f"cannot write the new files: {exc}")
            return
        self._status(meta, State.APPLIED)
        if meta.kind == AGENT_CONFIG:
            self._restart(f"agent-config v{meta.version} applied")

    async def _switch(self, meta: payload_pb2.PayloadMeta, path: Path, confirm_within: int) -> None:
        """Install beside the running version, start the trial, and exec the new one."""
        try:
            package = await asyncio.to_thread(
                selfupdate.install, self._state_dir, meta.version, meta.sha256, path
            )
            await asyncio.to_thread(
                selfupdate.start_trial,
                self._state_dir,
                meta.version,
                meta.deploy_id,
                confirm_within or selfupdate.DEFAULT_CONFIRM_WITHIN,
                self._restart_argv(),
            )
        except (selfupdate.InstallError, OSError) as exc:
            self._status(meta, State.FAILED, f"not installed: {exc}")
            return
        log.info("agent payload v%d (package %s) installed; switching to it", meta.version, package)
        self._restart(f"switching to agent payload v{meta.version} (package {package})")
