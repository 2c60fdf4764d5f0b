"""Runs queued test builds (controller/testbuilds.py) on drones.

Regular jobs come first. A pass sends the oldest queued test builds, at
most ``parallel`` running at once, to drones that are online, speak
``test-builds``, are neither draining nor grounded and run nothing: while
a job of a running session is ready (``BuildQueue.ready``) only drones
the admin marked for tests (``--test-build-drones``) take test builds;
otherwise any idle one does. A drone running a test build counts as busy
for the build queue's planner (``BuildQueue.elsewhere``), so the two
never send one drone two builds, and so does a marked drone while test
builds wait: marked drones build test builds first, regular jobs when
none waits. A test build is never pre-empted, so a regular job that
becomes ready meanwhile waits for the next idle drone.

A test build's attempt, as the runner sees it::

    queued --sent (TestBuilds.started, then StartBuild test_build=true)--> running
    running --SUCCEEDED + packages in the test binhost--> succeeded
    running --FAILED / REFUSED / not started in time / drone gone / timed out--> failed
    running --CancelBuild (an admin) + CANCELLED--> cancelled

A test build is tried once: there is no requeue (its user asks again). Its
build log reaches the controller as a regular build's does (BuildsService,
``buildlogs/<build id>.log``) and is served at
``/api/v1/test-build/{id}/log``; its last lines go into the record. Its
package goes to the test binhost (testbinhost.py), never staging. When it
ends, its notifications (notify.py) are queued and their outcome recorded
(TestBuilds.notified). Retention deletes finished test builds older than
``keep_days``: records, logs and packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.clock import SYSTEM, Clock, iso
from swarm.controller.builds import BuildQueue, failure_summary
from swarm.controller.domain import BuildEventData
from swarm.controller.errors import FailedPrecondition, SwarmError
from swarm.controller.fleet import ONLINE, DroneState, Fleet
from swarm.controller.notify import Notice, Notifier
from swarm.controller.testbinhost import TEST_PATH, WARNING, TestBinhost
from swarm.controller.testbuilds import BUILD_PREFIX, State, TestBuild, TestBuilds
from swarm.protocol import TEST_BUILDS, speaks
from swarm.tasks import TaskSet, wait_event

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between passes when nothing wakes the runner
RETENTION_EVERY = 3600.0  # seconds between retention runs
TAIL_READ = 16 * 1024  # bytes of a build log's end read for its record (the core trims)
HELLO_ALLOWANCE = 5.0  # seconds a StartBuild may still be on its way when the drone says Hello
INBOX_LIMIT = 1024  # build events waiting for a pass (only the runner's builds get in)
LOST = "lost"  # the kind of the runner's own event for a build its drone came back without


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    parallel: int = 1
    drones: frozenset[str] = frozenset()  # names of drones marked for tests
    keep_days: float = 7.0
    build_timeout: float = 3600.0
    start_timeout: float = 60.0
    grace: float = 30.0


@dataclass(slots=True)
class Attempt:
    """A test build sent to a drone (or about to be)."""

    test_id: str
    build_id: str
    drone_id: str
    drone_name: str
    cpv: str
    use: tuple[str, ...]
    sent_at: float
    sent: bool = False  # the StartBuild went into the drone's outbox
    started: bool = False  # the drone said STARTED
    cancel_by: str = ""  # an admin asked to cancel it
    cancel_sent: bool = False  # the CancelBuild went into the drone's outbox


class TestRunner:
    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        tests: TestBuilds,
        builds: BuildQueue,
        fleet: Fleet,
        binhost: TestBinhost,
        notifier: Notifier,
        logs: Path,
        settings: RunnerSettings,
        *,
        clock: Clock = SYSTEM,
    ) -> None:
        self._tests = tests
        self._builds = builds
        self._fleet = fleet
        self.binhost = binhost
        self.notifier = notifier
        self._logs = logs
        self.settings = settings
        self._clock = clock
        # The public tier's base URL, for links in notifications (set once it listens).
        self.public_url = ""
        self._running: dict[str, Attempt] = {}  # build id -> attempt
        self._inbox: deque[tuple[str, BuildEventData]] = deque(maxlen=INBOX_LIMIT)
        self._wake = asyncio.Event()
        self._tasks = TaskSet("testrunner")
        self._next_retention = 0.0
        self._waiting = False  # test builds were queued at the last pass
        self._pass_lock = asyncio.Lock()  # one pass at a time (the loop's, a test's)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        await self.binhost.start()
        await self.notifier.start()
        self._tests.on_queued(self._wake.set)
        self._tests.on_cancel(self._cancel)
        self._builds.elsewhere = self.held_drones
        self._tasks.spawn(self._loop(), "passes")

    async def stop(self) -> None:
        await self._tasks.close()
        await self.notifier.stop()
        await self.binhost.stop()

    # -- what the others ask -------------------------------------------------------

    def running_by_drone(self) -> dict[str, int]:
        running: dict[str, int] = {}
        for attempt in self._running.values():
            running[attempt.drone_id] = running.get(attempt.drone_id, 0) + 1
        return running

    def held_drones(self) -> dict[str, int]:
        """What the build queue's planner must count as busy: drones running a
        test build, and while test builds wait the marked drones."""
        held = self.running_by_drone()
        if self._waiting and self.settings.drones:
            for drone in self._fleet.connected():
                if drone.name in self.settings.drones:
                    held[drone.id] = held.get(drone.id, 0) + 1
        return held

    def owns(self, build_id: str) -> bool:
        return build_id in self._running

    def owner(self, build_id: str) -> str | None:
        """The drone the test build was sent to (authorizes its log and uploads)."""
        attempt = self._running.get(build_id)
        return attempt.drone_id if attempt is not None else None

    def cpv_of(self, build_id: str) -> str | None:
        attempt = self._running.get(build_id)
        return attempt.cpv if attempt is not None else None

    def log_path(self, build_id: str) -> Path:
        return self._logs / f"{build_id}.log"

    # -- from the gateway (on the loop, never waiting) -------------------------------

    def on_build_event(self, drone: DroneState, event: BuildEventData) -> None:
        attempt = self._running.get(event.build_id)
        if attempt is None or attempt.drone_id != drone.id:
            return
        self._inbox.append((drone.id, event))
        self._wake.set()

    def on_hello(self, drone: DroneState, current_build: str, recent: Iterable[BuildEventData]) -> None:
        """A drone (re)connected: its outcomes sent meanwhile count; a test build
        it neither runs nor reports is lost (failed); one it runs that is not
        ours any more (ended while it was away, or before this controller's
        restart) is cancelled there, so the drone is free again."""
        if (
            current_build.startswith(BUILD_PREFIX)
            and current_build not in self._running
            and drone.link is not None
        ):
            drone.link.cancel_build(current_build, "the controller no longer runs this test build")
        reported = set()
        for event in recent:
            if event.build_id in self._running:
                reported.add(event.build_id)
                self.on_build_event(drone, event)
        now = self._clock.time()
        for attempt in self._running.values():
            if (
                attempt.drone_id == drone.id
                and attempt.build_id != current_build
                and attempt.build_id not in reported
                and now - attempt.sent_at > HELLO_ALLOWANCE
            ):
                lost = BuildEventData(
                    attempt.build_id,
                    attempt.test_id,
                    LOST,
                    -1,
                    f"{drone.name} reconnected without the build (it was lost)",
                    0.0,
                    (),
                )
                self._inbox.append((drone.id, lost))
        self._wake.set()

    def _cancel(self, build: TestBuild, by: str) -> None:
        """TestBuilds.cancel of a running build: stop it on its drone."""
        attempt = self._running.get(build.build_id)
        if attempt is not None and not attempt.cancel_by:
            attempt.cancel_by = by or "an admin"
            self._wake.set()

    # -- the passes ----------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await wait_event(self._wake, TICK)
            self._wake.clear()
            try:
                await self.run_pass()
            except Exception:
                log.exception("test build pass failed")

    async def run_pass(self) -> None:
        async with self._pass_lock:
            await self._pass()

    async def _pass(self) -> None:
        now = self._clock.time()
        while self._inbox:
            drone_id, event = self._inbox.popleft()
            await self._outcome(drone_id, event)
        await self._check(now)
        await self._dispatch(now)
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY
            await self.retain(now)

    async def _dispatch(self, now: float) -> None:
        room = max(0, self.settings.parallel - len(self._running))
        # One more than there is room for: do others wait after these?
        queued = await self._tests.queued(room + 1)
        take = 0
        if queued and room:
            # Looked for only when a test build waits: a pass of an idle queue costs nothing.
            drones = self._idle_drones(now)
            take = min(room, len(drones), len(queued))
            for build, drone in zip(queued[:take], drones, strict=False):
                await self._send(build, drone, now)
        waiting = len(queued) > take
        if waiting != self._waiting:
            self._waiting = waiting
            self._builds.wake()  # the marked drones are held for tests, or free for jobs again

    def _idle_drones(self, now: float) -> list[DroneState]:
        """Drones that may take a test build now, marked ones first."""
        busy = self._builds.running_by_drone()
        for drone_id, count in self.running_by_drone().items():
            busy[drone_id] = busy.get(drone_id, 0) + count
        marked = self.settings.drones
        regular_waits = self._builds.ready()
        found = []
        for drone in self._fleet.connected():
            if (
                drone.status != ONLINE
                or drone.link is None
                or busy.get(drone.id)
                or not speaks(drone.features, TEST_BUILDS)
                or (regular_waits and drone.name not in marked)
            ):
                continue
            hold = self._builds.dispatch_state(drone.id, now, busy)
            if hold.draining or hold.grounded:
                continue
            found.append(drone)
        found.sort(key=lambda d: (d.name not in marked, d.name))
        return found

    async def _send(self, build: TestBuild, drone: DroneState, now: float) -> None:
        build_id = f"{build.id}-{secrets.token_hex(3)}"
        attempt = Attempt(build.id, build_id, drone.id, drone.name, build.cpv, build.use, now)
        # Busy for the planner from here, before the database write below yields.
        self._running[build_id] = attempt
        try:
            await self._tests.started(build.id, drone.name, build_id)
        except SwarmError as exc:
            # Cancelled meanwhile, or the database refused: it stays as it is.
            log.info("test build %s not sent: %s", build.id, exc)
            del self._running[build_id]
            return
        self._start_on_drone(attempt)

    def _start_on_drone(self, attempt: Attempt) -> None:
        drone = self._fleet.get(attempt.drone_id)
        if drone is None or drone.link is None:
            return  # the drone went: its grace period decides
        attempt.sent = drone.link.start_build(
            attempt.test_id,
            attempt.build_id,
            attempt.cpv,
            int(self.settings.build_timeout),
            self._builds.binhost_for(drone.network),
            test_build=True,
            # The USE flags asked for (from the admin's allowed list), on top of the profile's.
            env={"USE": " ".join(attempt.use)} if attempt.use else None,
        )
        if attempt.sent:
            attempt.sent_at = self._clock.time()
            log.info("test build %s (%s) sent to %s", attempt.test_id, attempt.cpv, attempt.drone_name)

    async def _check(self, now: float) -> None:
        """Cancels asked for, StartBuilds not sent yet, and the timers."""
        settings = self.settings
        for attempt in list(self._running.values()):
            drone = self._fleet.get(attempt.drone_id)
            link = drone.link if drone is not None and drone.connected else None
            if attempt.cancel_by:
                if not attempt.sent or link is None:
                    # Never reached the drone, or the drone is gone with it.
                    await self._end(attempt, "cancelled", None, f"cancelled by {attempt.cancel_by}")
                    continue
                if not attempt.cancel_sent:
                    attempt.cancel_sent = link.cancel_build(
                        attempt.build_id, f"cancelled by {attempt.cancel_by}"
                    )
            why = ""
            if link is None:
                seen = drone.last_seen_at if drone is not None else None
                if now - max(seen or 0.0, attempt.sent_at) > settings.grace:
                    why = f"{attempt.drone_name} went away during the test build"
            elif not attempt.sent:
                self._start_on_drone(attempt)
            elif not attempt.started and now - attempt.sent_at > settings.start_timeout:
                why = f"{attempt.drone_name} did not start it within {settings.start_timeout:.0f}s"
            elif now - attempt.sent_at > settings.build_timeout + 30:
                why = f"timed out after {settings.build_timeout:.0f}s"
            if why:
                if link is not None:
                    link.cancel_build(attempt.build_id, why)
                await self._end(attempt, "failed", None, why)

    async def _outcome(self, drone_id: str, event: BuildEventData) -> None:
        attempt = self._running.get(event.build_id)
        if attempt is None or attempt.drone_id != drone_id:
            return
        if event.kind == "started":
            attempt.started = True
            return
        if event.kind == "succeeded":
            packages = self.binhost.files_of(attempt.build_id)
            if packages:
                await self._end(attempt, "succeeded", event.exit_code, "", packages)
            else:
                await self._end(attempt, "failed", event.exit_code, "reported success but no package arrived")
        elif event.kind == "failed":
            # Why, from the log as the controller holds it (else the drone's own tail).
            await self._end(attempt, "failed", event.exit_code, None, fallback=event.reason)
        elif event.kind == LOST:
            await self._end(attempt, "failed", None, event.reason or "lost")
        elif event.kind == "refused":
            await self._end(attempt, "failed", None, f"{attempt.drone_name} refused it: {event.reason}")
        elif attempt.cancel_by:
            await self._end(attempt, "cancelled", event.exit_code, f"cancelled by {attempt.cancel_by}")
        else:
            await self._end(
                attempt, "failed", event.exit_code, f"cancelled on {attempt.drone_name}: {event.reason}"
            )

    async def _end(
        self,
        attempt: Attempt,
        state: State,
        exit_code: int | None,
        reason: str | None,
        packages: tuple[str, ...] = (),
        *,
        fallback: str = "",
    ) -> None:
        """``reason`` None: the failure's line from the log's end (builds.failure_summary)."""
        tail = await asyncio.to_thread(_read_tail, self.log_path(attempt.build_id)) or fallback
        if reason is None:
            reason = failure_summary(tail)
        try:
            done: TestBuild | None = await self._tests.finished(
                attempt.test_id, state, exit_code, reason, tail, packages
            )
        except FailedPrecondition as exc:
            # Ended already (say the queue gave it up): nothing more to record or tell.
            log.info("test build %s: %s", attempt.test_id, exc)
            done = None
        except SwarmError as exc:
            # The database refused: tried again on the next pass (the attempt stays).
            log.warning("test build %s: its end is not recorded yet: %s", attempt.test_id, exc)
            return
        del self._running[attempt.build_id]
        self.binhost.forget(attempt.build_id)
        # The drone is free: regular jobs first.
        self._builds.wake()
        self._wake.set()
        if done is not None:
            self.notify(done)

    def notify(self, build: TestBuild) -> None:
        if not (build.notify_email or build.webhook_url):
            return
        if not self.notifier.send(self.notice(build)):
            self._tasks.spawn(
                self._tests.notified(build.id, "failed: the notification queue is full"), "notified"
            )

    # -- what a notification says ---------------------------------------------------------

    def links(self, build: TestBuild) -> dict[str, Any]:
        base = self.public_url.rstrip("/")
        return {
            "self": f"{base}/api/v1/test-build/{build.id}",
            "log": f"{base}/api/v1/test-build/{build.id}/log",
            "packages": [f"{base}{TEST_PATH}/{p}" for p in build.packages],
        }

    def notice(self, build: TestBuild) -> Notice:
        links = self.links(build)
        payload = {
            "id": build.id,
            "package": build.package,
            "cpv": build.cpv,
            "user": build.user,
            "state": build.state,
            "drone": build.drone,
            "queued_at": iso(build.queued_at),
            "started_at": iso(build.started_at),
            "finished_at": iso(build.finished_at),
            "exit_code": build.exit_code,
            "reason": build.reason,
            "log_tail": build.log_tail,
            "packages": links["packages"],
            "links": {"self": links["self"], "log": links["log"]},
            "warning": WARNING if build.packages else "",
        }
        lines = [
            f"Test build {build.id} of {build.package} ({build.cpv}) for {build.user}: {build.state}.",
            "",
            f"Drone:    {build.drone or '-'}",
            f"Queued:   {iso(build.queued_at)}",
            f"Started:  {iso(build.started_at) or '-'}",
            f"Finished: {iso(build.finished_at) or '-'}",
            f"Exit:     {'-' if build.exit_code is None else build.exit_code}",
        ]
        if build.reason:
            lines.append(f"Reason:   {build.reason}")
        lines += ["", f"Build log: {links['log']}"]
        if links["packages"]:
            lines += ["", f"Packages ({WARNING}):", *(f"  {url}" for url in links["packages"])]
        if build.log_tail:
            lines += ["", "The last lines of the log:", "", build.log_tail]
        return Notice(
            build.id,
            build.notify_email,
            build.webhook_url,
            f"Test build {build.id} of {build.package}: {build.state}",
            "\n".join(lines) + "\n",
            payload,
        )

    # -- retention -------------------------------------------------------------------------

    async def retain(self, now: float) -> int:
        """Forget test builds finished more than keep_days ago, with their logs
        and packages; how many went."""
        try:
            gone = await self._tests.prune(now - self.settings.keep_days * 86400)
        except SwarmError as exc:
            log.warning("test build retention put off: %s", exc)
            return 0
        if not gone:
            return 0
        paths = [p for build in gone for p in build.packages]
        logs = [self.log_path(b.build_id) for b in gone if b.build_id]
        try:
            removed = await self.binhost.remove(paths)
            await asyncio.to_thread(_unlink_all, logs)
        except (OSError, SwarmError) as exc:
            log.warning("test build retention: files not all deleted: %s", exc)
            removed = 0
        log.info(
            "retention: %d test build(s) finished over %.0f day(s) ago forgotten, %d package(s) deleted",
            len(gone),
            self.settings.keep_days,
            removed,
        )
        return len(gone)


def _read_tail(path: Path) -> str:
    with contextlib.suppress(OSError), path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - TAIL_READ))
        return fh.read().decode(errors="replace")
    return ""


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
