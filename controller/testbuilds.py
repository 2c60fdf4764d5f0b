"""Test builds: a token holder asks "does this package build with the
swarm's profile?", without a release ever seeing the answer.

The core: tokens (stored hashed, each with its own limits), the checks a
request passes before anything is queued, and the records of the test
builds and their transitions. The web tier parses and renders; the
runner (controller/testrunner.py) takes queued builds to drones and
reports back here.

A request, in order (each refusal is a TestBuildRefused, nothing queued):

    401  no token, an unknown one, a revoked one
    400  not a plain atom, USE not allowed, a bad email or webhook
    202  existing: the same package and USE of the same user is queued already
    429  the token's queued cap, the global queued cap, the token's bucket
    400  the atom does not resolve in the controller's Portage tree
    202  queued

The bucket is charged before Portage is asked (the question costs the
controller the same whatever the answer) and refunded when the database
cannot take the build (nothing happened that the user did).

A test build's life:

    queued --> running --> succeeded | failed | cancelled
       |                       ^
       +-----------------------+  (cancelled by an admin, or failed to start)

Every transition is an event (test_build_queued, _started, _succeeded,
_failed, _cancelled) naming the user; token changes are admin-only events
(test_build_token_created, _revoked). A secret never leaves ``create_token``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias, get_args

from swarm.batching import Batcher
from swarm.clock import SYSTEM, Clock
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound, SwarmError, Unavailable
from swarm.controller.events import EventLog
from swarm.controller.store.records import TestBuildRecord, TestBuildTokenRecord
from swarm.controller.store.runner import StoreRunner
from swarm.controller.testbuild_rules import (
    ANY_HOST,
    Bucket,
    Rate,
    check_atom,
    check_email,
    check_use,
    check_user,
    check_webhook,
)
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATES: tuple[State, ...] = get_args(State)
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"queued", "running"})

# The record is the build: the same fields cross the store boundary and this one.
TestBuild: TypeAlias = TestBuildRecord

DEFAULT_MAX_QUEUED = 100
DEFAULT_ESTIMATE = 300.0  # seconds of a package never built before
QUEUE_RETRY = 60.0  # Retry-After when a queue cap is reached: a build takes minutes
LOG_TAIL_LINES = 50
LOG_TAIL_BYTES = 8 * 1024
REASON_MAX = 500
MAX_BURST = 1000
MAX_QUEUED_PER_TOKEN = 1000
MAX_SECRET = 200
RESOLVED_KEEP = 1024  # atoms whose answer is remembered
RESOLVED_FOR = 60.0  # seconds an answer is remembered (the tree changes on sync)
TEST_BINHOST_PATH = "/binhost/test"  # the public tier's path of the test PKGDIR
REPLAYED = 10_000  # recent requests replayed into the buckets at start
TOKEN_PREFIX = "tbt-"
BUILD_PREFIX = "tb-"

Resolver = Callable[[str], Awaitable[str]]  # atom -> cpv; raises NotFound / InvalidArgument
Estimator = Callable[[str], float | None]  # cpn -> mean build seconds, None if never built


class TestBuildRefused(SwarmError):
    """A request refused: ``status`` 400, 401 or 429 (then ``retry_after_s``)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as admins see it: never its secret nor the secret's hash."""

    id: str
    user: str
    rate: Rate
    burst: int
    max_queued: int
    created_at: float
    created_by: str
    revoked_at: float | None
    last_used_at: float | None
    queued: int  # its builds queued now


@dataclass(frozen=True, slots=True)
class Submitted:
    build: TestBuild
    position: int | None  # 1: next to run; None once it runs
    estimate_s: float | None  # seconds until it is done, roughly; None once finished
    existing: bool  # the same request was queued already: this is that build


def _hash(secret: str) -> str:
    # "replace": a header may carry anything; it then matches no token.
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


@functools.lru_cache(maxsize=4096)
def _cpn(cpv: str) -> str:
    """category/name of a category/name-version."""
    category, _, rest = cpv.partition("/")
    parts = rest.split("-")
    cut = len(parts) - (2 if len(parts) > 2 and parts[-1].startswith("r") and parts[-1][1:].isdigit() else 1)
    return f"{category}/{'-'.join(parts[:cut])}" if cut > 0 else cpv


def log_tail(text: str) -> str:
    """The last LOG_TAIL_LINES lines of ``text``, at most LOG_TAIL_BYTES bytes of UTF-8."""
    lines = text.splitlines()[-LOG_TAIL_LINES:]
    tail = "\n".join(lines)
    data = tail.encode("utf-8", "replace")
    if len(data) > LOG_TAIL_BYTES:
        tail = data[-LOG_TAIL_BYTES:].decode("utf-8", "ignore")
    return tail


def _one_line(text: str) -> str:
    return " ".join(text.split())[:REASON_MAX]


class GroupCommit:
    """Test builds to store: those that arrive while a transaction is being
    written go together in the next one (swarm.batching), so a burst of
    requests costs a few commits rather than one each. Each caller returns
    once its build is stored, or with the store's error."""

    def __init__(self, runner: StoreRunner) -> None:
        self._runner = runner
        self.put: Batcher[TestBuild, None] = Batcher(
            self._write, lambda: Unavailable("the test build may not be stored; try again")
        )

    async def _write(self, batch: list[TestBuild]) -> list[None]:
        await self._runner.call(self._runner.store.put_test_builds, batch)
        return [None] * len(batch)


class TestBuilds:
    """The test-build queue's records and tokens. ``start`` loads them."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        runner: StoreRunner,
        events: EventLog,
        resolve: Resolver,
        *,
        max_queued: int = DEFAULT_MAX_QUEUED,
        allowed_use: frozenset[str] = frozenset(),
        webhook_hosts: frozenset[str] = frozenset({ANY_HOST}),
        parallel: int = 1,
        estimate: Estimator | None = None,
        warm: Callable[[], Awaitable[None]] | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        """``warm``: readies what ``resolve`` asks, called when tokens exist."""
        self._runner = runner
        self._events = events
        self._resolve = resolve
        self.max_queued = max_queued
        self.allowed_use = allowed_use
        self.webhook_hosts = webhook_hosts
        self.parallel = max(1, parallel)
        self._estimate = estimate or (lambda cpn: None)
        self._warm = warm
        self._tasks = TaskSet("testbuilds")
        self._clock = clock
        self._tokens: dict[str, TestBuildTokenRecord] = {}
        self._buckets: dict[str, Bucket] = {}
        # Queued and running builds, oldest first (insertion order is queue order).
        self._active: dict[str, TestBuild] = {}
        # (user, package as asked, USE) and (user, cpv, USE) of each queued build -> its id.
        self._by_request: dict[tuple[str, str, tuple[str, ...]], str] = {}
        self._by_cpv: dict[tuple[str, str, tuple[str, ...]], str] = {}
        self._arriving: dict[tuple[str, str, tuple[str, ...]], asyncio.Event] = {}
        self._reserved: collections.Counter[str] = collections.Counter()  # per token, being checked
        # atom -> (when, its cpv or why not): a flood of one package asks Portage once.
        self._resolved: collections.OrderedDict[str, tuple[float, str | SwarmError]] = (
            collections.OrderedDict()
        )
        self._resolving: dict[str, asyncio.Event] = {}  # atoms Portage is being asked about
        self._writes = GroupCommit(runner)
        self._queued: set[str] = set()  # ids, and how many each token has queued
        self._queued_of: collections.Counter[str] = collections.Counter()
        self._wake: list[Callable[[], None]] = []
        self._cancel_running: Callable[[TestBuild, str], None] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load tokens and the queue. Builds that were running when the
        controller stopped failed: their drones' results cannot be taken."""
        store = self._runner.store
        now = self._clock.time()
        for token in await self._runner.call(store.list_test_build_tokens):
            self._tokens[token.id] = token
        active = await self._runner.call(store.list_test_builds, limit=1_000_000, states=sorted(ACTIVE))
        for build in sorted(active, key=lambda b: (b.queued_at, b.id)):
            if build.state == "running":
                await self._finish(build, "failed", None, "the controller restarted while it ran", "", ())
                continue
            self._add(build)
        # Buckets as they stood: each token's recent requests replayed.
        recent = await self._runner.call(store.list_test_builds, limit=REPLAYED)
        for build in sorted(recent, key=lambda b: b.queued_at):
            owner = self._tokens.get(build.token_id)
            if owner is not None and (owner.last_used_at or 0.0) < build.queued_at:
                owner = self._tokens[owner.id] = replace(owner, last_used_at=build.queued_at)
            # A bucket is full again after burst intervals: older requests do not count.
            if owner is not None and now - build.queued_at < Rate.parse(owner.rate).interval * owner.burst:
                self._bucket(owner, build.queued_at).take(build.queued_at)
        if any(t.revoked_at is None for t in self._tokens.values()):
            self._warm_soon()

    async def stop(self) -> None:
        await self._tasks.close()

    def _warm_soon(self) -> None:
        """Have what answers ``resolve`` ready (a Portage process that has read
        the tree) before a token holder's first request waits for it; in the
        background, so that neither the controller's start nor the admin's
        new token waits for it (a request meanwhile waits its turn)."""
        if self._warm is not None and not self._tasks:
            self._tasks.spawn(self._warm_up(self._warm), "warm-up")

    @staticmethod
    async def _warm_up(warm: Callable[[], Awaitable[None]]) -> None:
        try:
            await warm()
        except SwarmError as exc:
            log.warning("cannot ready Portage for test builds yet: %s", exc.message)

    def on_queued(self, wake: Callable[[], None]) -> None:
        """``wake`` is called (on the loop, at once) whenever a build is queued."""
        self._wake.append(wake)

    def on_cancel(self, cancel: Callable[[TestBuild, str], None]) -> None:
        """The runner's: asked to stop a running build (``cancel(build, by)``);
        it reports the end with ``finished(..., "cancelled", ...)``."""
        self._cancel_running = cancel

    # -- the public write -------------------------------------------------------

    async def submit(
        self,
        secret: str,
        package: str,
        *,
        notify_email: str = "",
        webhook_url: str = "",
        use: tuple[str, ...] = (),
    ) -> Submitted:
        """Queue a test build for the token holder; raises TestBuildRefused."""
        token = self._authenticate(secret)
        try:
            atom = check_atom(package)
            flags = check_use(list(use), self.allowed_use)
            email = check_email(notify_email)
            webhook = check_webhook(webhook_url, self.webhook_hosts)
        except InvalidArgument as exc:
            raise TestBuildRefused(400, exc.message) from None
        key = (token.user, atom, flags)
        while (arriving := self._arriving.get(key)) is not None:
            await arriving.wait()  # the same request, a moment earlier: its answer is ours
        existing = self._by_request.get(key)
        known = self._known_cpv(atom)
        if existing is None and known is not None:
            existing = self._by_cpv.get((token.user, known, flags))  # asked another way
        if existing is not None:
            return self._submitted(self._active[existing], existing=True)
        self._check_caps(token)
        now = self._clock.time()
        wait = self._bucket(token, now).take(now)
        if wait > 0:
            raise TestBuildRefused(
                429,
                f"this token's rate limit ({Rate.parse(token.rate)}, burst {token.burst}) is reached; "
                f"try again in {math.ceil(wait)} s",
                wait,
            )
        arriving = self._arriving[key] = asyncio.Event()
        self._reserved[token.id] += 1
        try:
            cpv = await self._resolved_cpv(atom)
            same = self._by_cpv.get((token.user, cpv, flags))
            if same is not None:
                # Asked for another way ("=cat/pkg-1" for "cat/pkg"): the same build.
                self._bucket(token, now).give_back(self._clock.time())
                return self._submitted(self._active[same], existing=True)
            build = TestBuild(
                id=BUILD_PREFIX + secrets.token_hex(6),
                package=atom,
                cpv=cpv,
                user=token.user,
                token_id=token.id,
                state="queued",
                queued_at=now,
                use=flags,
                notify_email=email,
                webhook_url=webhook,
            )
            try:
                await self._writes.put(build)
            except BaseException:
                self._bucket(token, now).give_back(self._clock.time())
                raise
            self._add(build)
            # Not written: its builds' queued_at say it again at the next start.
            self._tokens[token.id] = replace(self._tokens.get(token.id, token), last_used_at=now)
        finally:
            self._reserved[token.id] -= 1
            del self._arriving[key]
            arriving.set()
        self._events.emit(
            "test_build_queued",
            f"test build {build.id} of {build.cpv} queued for {build.user}",
            id=build.id,
            package=build.package,
            cpv=build.cpv,
            user=build.user,
            use=list(build.use),
        )
        for wake in self._wake:
            wake()
        return self._submitted(build, existing=False)

    def check_token(self, secret: str) -> None:
        """TestBuildRefused (401) unless ``secret`` is a live token's."""
        self._authenticate(secret)

    def _authenticate(self, secret: str) -> TestBuildTokenRecord:
        token_id, dot, _ = secret.partition(".")
        token = self._tokens.get(token_id) if dot and len(secret) <= MAX_SECRET else None
        if token is None or not hmac.compare_digest(token.secret_hash, _hash(secret)):
            raise TestBuildRefused(401, "a valid test-build token is required (Authorization: Bearer TOKEN)")
        if token.revoked_at is not None:
            raise TestBuildRefused(401, "this test-build token was revoked")
        return token

    def _check_caps(self, token: TestBuildTokenRecord) -> None:
        mine = self._queued_of[token.id] + self._reserved[token.id]
        if mine >= token.max_queued:
            raise TestBuildRefused(
                429,
                f"{mine} test builds of this token are queued, its most; try again when one has run",
                QUEUE_RETRY,
            )
        queued = len(self._queued) + sum(self._reserved.values())
        if queued >= self.max_queued:
            raise TestBuildRefused(
                429, f"the test-build queue is full ({queued} queued); try again later", QUEUE_RETRY
            )

    def _bucket(self, token: TestBuildTokenRecord, now: float) -> Bucket:
        bucket = self._buckets.get(token.id)
        if bucket is None:
            bucket = self._buckets[token.id] = Bucket(Rate.parse(token.rate), token.burst, now)
        return bucket

    def _known_cpv(self, atom: str) -> str | None:
        """The atom's cpv if Portage told it lately (without asking again)."""
        known = self._resolved.get(atom)
        if (
            known is None
            or self._clock.monotonic() - known[0] > RESOLVED_FOR
            or isinstance(known[1], SwarmError)
        ):
            return None
        return known[1]

    async def _resolved_cpv(self, atom: str) -> str:
        """The atom's best visible version in the tree; answers remembered a
        while, and one question at a time per atom: the requests that arrive
        while Portage is asked wait for its answer instead of asking again."""
        while (asking := self._resolving.get(atom)) is not None:
            await asking.wait()
        now = self._clock.monotonic()
        known = self._resolved.get(atom)
        if known is None or now - known[0] > RESOLVED_FOR:
            asking = self._resolving[atom] = asyncio.Event()
            try:
                answer: str | SwarmError
                try:
                    answer = await self._resolve(atom)
                except (NotFound, InvalidArgument) as exc:
                    answer = exc
            finally:
                del self._resolving[atom]
                asking.set()
            known = self._resolved[atom] = (now, answer)
            while len(self._resolved) > RESOLVED_KEEP:
                self._resolved.popitem(last=False)
        self._resolved.move_to_end(atom)
        answer = known[1]
        if isinstance(answer, SwarmError):
            raise TestBuildRefused(400, answer.message)
        return answer

    def _add(self, build: TestBuild) -> None:
        self._active[build.id] = build
        if build.state == "queued":
            self._by_request[(build.user, build.package, build.use)] = build.id
            self._by_cpv[(build.user, build.cpv, build.use)] = build.id
            self._queued.add(build.id)
            self._queued_of[build.token_id] += 1

    def _unqueue(self, build: TestBuild) -> None:
        """It is queued no more: a request for it queues a new one."""
        if build.id in self._queued:
            self._queued.discard(build.id)
            self._queued_of[build.token_id] -= 1
        for index, key in (
            (self._by_request, (build.user, build.package, build.use)),
            (self._by_cpv, (build.user, build.cpv, build.use)),
        ):
            if index.get(key) == build.id:
                del index[key]

    # -- reading ---------------------------------------------------------------

    def _submitted(self, build: TestBuild, *, existing: bool) -> Submitted:
        return Submitted(build, self.position(build), self.estimate(build), existing)

    def position(self, build: TestBuild) -> int | None:
        """1 for the next to run; None unless queued."""
        if build.state != "queued":
            return None
        ahead = 0
        for other in self._active.values():
            if other.id == build.id:
                return ahead + 1
            if other.state == "queued":
                ahead += 1
        return None

    def estimate(self, build: TestBuild) -> float | None:
        """Seconds until it is done, roughly: what runs and what is queued
        ahead of it, spread over the parallel slots. None once finished."""
        if build.state in FINISHED:
            return None
        now = self._clock.time()
        work = 0.0
        for other in self._active.values():
            mean = self._mean(other.cpv)
            if other.state == "running":
                work += max(0.0, mean - (now - (other.started_at or now)))
            else:
                work += mean
            if other.id == build.id:
                break
        return round(work / self.parallel, 1)

    def _mean(self, cpv: str) -> float:
        mean = self._estimate(_cpn(cpv))
        return DEFAULT_ESTIMATE if mean is None else mean

    async def get(self, id: str) -> TestBuild | None:
        build = self._active.get(id)
        if build is not None:
            return build
        return await self._runner.call(self._runner.store.get_test_build, id)

    async def recent(self, limit: int, state: State | None = None) -> list[TestBuild]:
        """Newest first."""
        if state in ACTIVE:
            found = [b for b in reversed(self._active.values()) if b.state == state]
            return found[:limit]
        states = () if state is None else (state,)
        return await self._runner.call(self._runner.store.list_test_builds, limit=limit, states=states)

    async def cancel(self, id: str, by: str) -> TestBuild:
        """A queued build is cancelled now; a running one is handed to the
        runner to stop (it stays running until the drone says it stopped)."""
        build = self._active.get(id)
        if build is None:
            if await self.get(id) is None:
                raise NotFound(f"no test build {id[:40]!r}")
            raise FailedPrecondition(f"test build {id[:40]} has finished already")
        if build.state == "running" and self._cancel_running is not None:
            self._cancel_running(build, by)
            return build
        return await self._finish(build, "cancelled", None, f"cancelled by {by}", "", ())

    # -- the runner's ----------------------------------------------------------

    async def queued(self, limit: int) -> list[TestBuild]:
        """Queued builds, oldest first."""
        return [b for b in self._active.values() if b.state == "queued"][:limit]

    def running(self) -> list[TestBuild]:
        return [b for b in self._active.values() if b.state == "running"]

    async def started(self, id: str, drone: str, build_id: str) -> TestBuild:
        build = self._active.get(id)
        if build is None or build.state != "queued":
            raise FailedPrecondition(f"test build {id[:40]} is not queued")
        build = replace(build, state="running", started_at=self._clock.time(), drone=drone, build_id=build_id)
        await self._writes.put(build)
        self._unqueue(build)
        self._active[id] = build
        self._events.emit(
            "test_build_started",
            f"test build {build.id} of {build.cpv} for {build.user} started on {drone}",
            id=build.id,
            cpv=build.cpv,
            user=build.user,
            drone=drone,
            build_id=build_id,
        )
        return build

    async def finished(
        self,
        id: str,
        state: State,
        exit_code: int | None,
        reason: str,
        log_tail: str,
        packages: tuple[str, ...],
    ) -> TestBuild:
        if state not in FINISHED:
            raise InvalidArgument(f"a test build cannot finish as {state!r}")
        build = self._active.get(id)
        if build is None:
            raise FailedPrecondition(f"test build {id[:40]} is not queued or running")
        return await self._finish(build, state, exit_code, reason, log_tail, packages)

    async def _finish(
        self,
        build: TestBuild,
        state: str,
        exit_code: int | None,
        reason: str,
        tail: str,
        packages: tuple[str, ...],
    ) -> TestBuild:
        done = replace(
            build,
            state=state,
            finished_at=self._clock.time(),
            exit_code=exit_code,
            reason=_one_line(reason),
            log_tail=log_tail(tail),
            packages=tuple(packages),
        )
        await self._writes.put(done)
        self._active.pop(build.id, None)
        self._unqueue(build)
        what = {"succeeded": "succeeded", "failed": "failed", "cancelled": "was cancelled"}[state]
        self._events.emit(
            f"test_build_{state}",
            f"test build {done.id} of {done.cpv} for {done.user} {what}"
            + (f": {done.reason}" if done.reason and state != "succeeded" else ""),
            id=done.id,
            cpv=done.cpv,
            user=done.user,
            drone=done.drone,
            exit_code=done.exit_code,
            reason=done.reason,
        )
        return done

    async def notified(self, id: str, summary: str) -> None:
        """How the notifications went ("sent", "failed: why")."""
        build = self._active.get(id) or await self._runner.call(self._runner.store.get_test_build, id)
        if build is None:
            return  # pruned meanwhile
        build = replace(build, notified=_one_line(summary))
        if build.id in self._active:
            self._active[build.id] = build
        await self._writes.put(build)

    async def prune(self, before: float) -> list[TestBuild]:
        """Forget builds that finished before ``before``; the ones forgotten
        (the runner deletes their packages)."""
        return await self._runner.call(self._runner.store.prune_test_builds, before)

    # -- tokens (admins) -------------------------------------------------------

    async def create_token(
        self, user: str, rate: Rate, burst: int, max_queued: int, by: str
    ) -> tuple[TokenInfo, str]:
        """A new token and its secret, which is shown this once."""
        check_user(user)
        if not 1 <= burst <= MAX_BURST:
            raise InvalidArgument(f"burst must be from 1 to {MAX_BURST}")
        if not 1 <= max_queued <= MAX_QUEUED_PER_TOKEN:
            raise InvalidArgument(f"max_queued must be from 1 to {MAX_QUEUED_PER_TOKEN}")
        token_id = TOKEN_PREFIX + secrets.token_hex(6)
        secret = f"{token_id}.{secrets.token_urlsafe(32)}"
        record = TestBuildTokenRecord(
            id=token_id,
            user=user,
            secret_hash=_hash(secret),
            rate=str(rate),
            burst=burst,
            max_queued=max_queued,
            created_at=self._clock.time(),
            created_by=by,
        )
        await self._runner.call(self._runner.store.put_test_build_token, record)
        self._tokens[token_id] = record
        self._warm_soon()
        self._events.emit(
            "test_build_token_created",
            f"{by} created test-build token {token_id} for {user} ({rate}, burst {burst})",
            id=token_id,
            user=user,
            rate=str(rate),
            burst=burst,
            max_queued=max_queued,
            by=by,
        )
        return self._info(record), secret

    async def tokens(self) -> list[TokenInfo]:
        """Newest first, revoked ones too."""
        found = sorted(self._tokens.values(), key=lambda t: (-t.created_at, t.id))
        return [self._info(t) for t in found]

    async def revoke_token(self, id: str, by: str) -> TokenInfo:
        """Revoke (idempotent): it is refused from now on and stays listed."""
        token = self._tokens.get(id)
        if token is None:
            raise NotFound(f"no test-build token {id[:40]!r}")
        if token.revoked_at is None:
            token = replace(token, revoked_at=self._clock.time())
            await self._runner.call(self._runner.store.put_test_build_token, token)
            self._tokens[id] = token
            self._buckets.pop(id, None)
            self._events.emit(
                "test_build_token_revoked",
                f"{by} revoked test-build token {id} of {token.user}",
                id=id,
                user=token.user,
                by=by,
            )
        return self._info(token)

    def _info(self, token: TestBuildTokenRecord) -> TokenInfo:
        return TokenInfo(
            id=token.id,
            user=token.user,
            rate=Rate.parse(token.rate),
            burst=token.burst,
            max_queued=token.max_queued,
            created_at=token.created_at,
            created_by=token.created_by,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
            queued=self._queued_of[token.id],
        )
