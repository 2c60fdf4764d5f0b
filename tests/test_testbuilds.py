"""Test builds in process (controller/testbuilds.py, testbuild_rules.py and
their views): what a request must be, the token bucket and the caps, the
duplicates, the queue's transitions and their events, a restart, and what
each view shows; and what the agent reads of emerge's merge list to keep
a test build's dependencies to staging (agent/teststeps.py). A real store
(SQLite) and event log; time is a manual clock. Atoms resolve through a
table of this overlay's packages: the real Portage answer is
tests/test_testbuild_api.py's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from swarm.agent.teststeps import MergeList, Stage, build_steps, merge_list, merge_row, refusal
from swarm.controller.errors import FailedPrecondition, InvalidArgument, NotFound
from swarm.controller.events import EventLog
from swarm.controller.store.base import StoreUnavailable
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore
from swarm.controller.testbuild_rules import (
    Bucket,
    Rate,
    check_atom,
    check_email,
    check_use,
    check_webhook,
    retry_after,
)
from swarm.controller.testbuilds import (
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    TestBuildRefused,
    TestBuilds,
    log_tail,
)
from swarm.controller.web.views import testbuilds as views
from swarm.controller.web.views.base import plain

from fakes.clock import ManualClock
from support.sqlite import locked, quick_runner

TREE = {
    "swarm-test/leaf-data": "swarm-test/leaf-data-1",
    "=swarm-test/leaf-data-1": "swarm-test/leaf-data-1",
    "swarm-test/broken": "swarm-test/broken-1",
    "swarm-test/chain-a": "swarm-test/chain-a-1",
    "swarm-test/chain-b": "swarm-test/chain-b-1",
    "swarm-test/chain-c": "swarm-test/chain-c-1",
    "swarm-test/chain-d": "swarm-test/chain-d-1",
    "swarm-test/sleeper": "swarm-test/sleeper-1",
}
LEAF, BROKEN = "swarm-test/leaf-data", "swarm-test/broken"
PACKAGES = ["swarm-test/chain-a", "swarm-test/chain-b", "swarm-test/chain-c", "swarm-test/chain-d"]


class Tree:
    """Resolves atoms as the controller's Portage does, counting the questions."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, atom: str) -> str:
        self.asked.append(atom)
        await asyncio.sleep(0)  # an answer comes later, as the worker's does
        if atom not in TREE:
            raise NotFound(f"no package {atom} in the swarm's tree")
        return TREE[atom]


@dataclass
class Harness:
    queue: TestBuilds
    events: EventLog
    runner: StoreRunner
    clock: ManualClock
    tree: Tree

    async def token(
        self, user: str = "alice", rate: str = "5/h", burst: int = 5, max_queued: int = 10
    ) -> str:
        _, secret = await self.queue.create_token(user, Rate.parse(rate), burst, max_queued, "admin:t")
        return secret

    async def refused(self, secret: str, package: str = LEAF, **kw: Any) -> TestBuildRefused:
        with pytest.raises(TestBuildRefused) as caught:
            await self.queue.submit(secret, package, **kw)
        return caught.value

    async def event_types(self) -> list[str]:
        await self.events.flush()
        return [e.type for e in await self.events.query(limit=1000) if e.type.startswith("test_build")]


@asynccontextmanager
async def harness(
    path: Path, clock: ManualClock | None = None, runner: StoreRunner | None = None, **options: Any
) -> AsyncIterator[Harness]:
    if runner is None:
        runner = StoreRunner(SqlStore(f"sqlite:///{path / 'swarm.db'}"))
        await runner.open()
    events = EventLog(runner, buffer=1000, retention=10_000)
    await events.start()
    tree = Tree()
    clock = clock or ManualClock(1_800_000_000.0)
    queue = TestBuilds(runner, events, tree, clock=clock, **options)
    await queue.start()
    try:
        yield Harness(queue, events, runner, clock, tree)
    finally:
        await events.stop()
        await runner.close()


def run(path: Path, body: Callable[[Harness], Any], **options: Any) -> Any:
    async def main() -> Any:
        async with harness(path, **options) as h:
            return await body(h)

    return asyncio.run(main())


# -- what a request may be ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("atom", "why"),
    [
        ("/etc/passwd", "a path"),
        ("../../etc/passwd", "a path"),
        ("@world", "a package set"),
        ("app-misc/*", "a wildcard"),
        ("app-misc/foo:0", "slot or repository"),
        ("app-misc/foo::gentoo", "slot or repository"),
        ("app-misc/foo[ssl]", "a USE dependency"),
        ("!app-misc/foo", "a blocker"),
        (">=app-misc/foo-1.0", "a version range"),
        ("~app-misc/foo-1.0", "a version range"),
        ("app-misc/foo-1.0", "a version without '='"),
        ("=app-misc/foo", "missing its version"),
        ("foo", "missing its category"),
        ("app-misc/foo; rm -rf /", "shell metacharacters"),
        ("app-misc/foo$(id)", "shell metacharacters"),
        ("app-misc/`id`", "shell metacharacters"),
        ("app-misc/foo\nbar", "shell metacharacters"),
        ("app-misc/foo bar", "shell metacharacters"),
        ("", "must not be empty"),
        ("a/" + "b" * 300, "longer than 200"),
    ],
)
def test_anything_but_a_plain_atom_is_refused_saying_what_it_is(atom: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_atom(atom)
    assert why in caught.value.message


@pytest.mark.parametrize(
    "atom",
    [
        "app-misc/foo",
        "=app-misc/foo-1.0",
        "=dev-libs/foo-bar-1.2.3_rc1-r3",
        "x11-libs/gtk+",
        "media-libs/libfoo-x11",
    ],
)
def test_plain_atoms_pass(atom: str) -> None:
    assert check_atom(atom) == atom


def test_use_flags_come_from_the_admins_list() -> None:
    allowed = frozenset({"ssl", "doc"})
    assert check_use(["ssl", "-doc", "ssl"], allowed) == ("-doc", "ssl")
    assert check_use(None, allowed) == ()
    for value, why in (
        (["ipv6"], "'ipv6' is not allowed"),
        (["ssl", "-ssl"], "both enabled and disabled"),
        (["s l"], "not a USE flag"),
        ("ssl", "a list of USE flags"),
        (["x"] * 33, "at most 32"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            check_use(value, allowed)
        assert why in caught.value.message, value
    with pytest.raises(InvalidArgument, match="allows no USE flags"):
        check_use(["ssl"], frozenset())


def test_email_and_webhook_are_checked() -> None:
    assert check_email("me@example.org") == "me@example.org"
    assert check_email("") == "" and check_webhook(None) == ""
    assert check_webhook("https://hooks.example.org/t?x=1") == "https://hooks.example.org/t?x=1"
    assert check_webhook("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080/hook"
    for bad in ("me", "me@", "@example.org", "me@exa mple.org", "a..b@example.org", "me@-x.org", 5):
        with pytest.raises(InvalidArgument, match="notify"):
            check_email(bad)
    for bad, why in (
        ("ftp://example.org/", "not an http"),
        ("file:///etc/passwd", "not an http"),
        ("https://", "not an http"),
        ("https://u:p@example.org/", "credentials"),
        ("https://example.org/#x", "fragment"),
        ("https://example.org:99999/", "not an http"),
        ("https://exa mple.org/", "not an http"),
    ):
        with pytest.raises(InvalidArgument, match=why):
            check_webhook(bad)


def test_a_webhook_reaches_only_the_hosts_the_admin_allows() -> None:
    # A token holder's webhook is a request the controller makes from inside its network.
    hooks = frozenset({"hooks.example.org"})
    assert check_webhook("https://HOOKS.example.org/t", hooks) == "https://HOOKS.example.org/t"
    with pytest.raises(InvalidArgument, match="not one this controller posts to"):
        check_webhook("http://127.0.0.1:8093/admin/api/drones", hooks)
    with pytest.raises(InvalidArgument, match="sends no webhooks"):
        check_webhook("https://hooks.example.org/t", frozenset())
    assert check_webhook("", frozenset()) == ""  # none asked: nothing to refuse


def test_a_controller_allowing_no_webhook_host_queues_nothing_for_one(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        secret = await h.token()
        with pytest.raises(TestBuildRefused, match="sends no webhooks") as refused:
            await h.queue.submit(secret, LEAF, webhook_url="http://10.0.0.1/hook")
        assert refused.value.http_status == 400
        assert await h.queue.recent(10) == []

    run(tmp_path, body, webhook_hosts=frozenset())


def test_rates_parse_and_print() -> None:
    assert Rate.parse("5/h") == Rate(5, 3600) and str(Rate(5, 3600)) == "5/h"
    assert Rate.parse("30/m").interval == 2.0
    for bad in ("5", "0/h", "5/w", "-1/h", "5/h ", 5):
        with pytest.raises(InvalidArgument, match="rate must be like 5/h"):
            Rate.parse(bad)


def test_a_bucket_gives_its_burst_then_one_per_interval() -> None:
    bucket = Bucket(Rate.parse("5/h"), burst=2, now=0.0)
    assert [bucket.take(0.0), bucket.take(0.0)] == [0.0, 0.0]
    assert bucket.take(0.0) == 720.0  # one request back every 12 minutes
    assert bucket.take(360.0) == 360.0
    assert bucket.take(720.0) == 0.0 and bucket.take(720.0) == 720.0
    bucket.give_back(720.0)
    assert bucket.take(720.0) == 0.0
    assert [bucket.take(10_000.0), bucket.take(10_000.0), bucket.take(10_000.0) > 0] == [0.0, 0.0, True]
    assert retry_after(0.2) == 1 and retry_after(719.01) == 720


# -- requests ---------------------------------------------------------------------------------


def test_the_sixth_request_in_an_hour_is_429_and_another_users_token_is_not_affected(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        alice, bob = await h.token("alice"), await h.token("bob")
        for package in [*PACKAGES, LEAF]:
            done = await h.queue.submit(alice, package)
            assert (done.build.state, done.existing) == ("queued", False)
        refused = await h.refused(alice, BROKEN)
        assert refused.http_status == 429 and refused.retry_after_s == 720.0
        assert "5/h, burst 5" in refused.message and "720 s" in refused.message
        assert (await h.queue.submit(bob, BROKEN)).build.user == "bob"
        await h.clock.advance(720)
        assert (await h.queue.submit(alice, BROKEN)).build.cpv == "swarm-test/broken-1"
        assert (await h.refused(alice, "swarm-test/sleeper")).retry_after_s == 720.0

    run(tmp_path, body)


def test_missing_unknown_and_revoked_tokens_are_401_and_nothing_is_queued(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        secret = await h.token()
        token_id = secret.partition(".")[0]
        for wrong in ("", "nonsense", secret + "x", token_id + ".wrong", "tbt-000000000000." + "a" * 43):
            assert (await h.refused(wrong)).http_status == 401
        other = await h.token("carol")
        await h.queue.revoke_token(token_id, "admin:t")
        refused = await h.refused(secret)
        assert (refused.http_status, refused.message) == (401, "this test-build token was revoked")
        assert (await h.queue.revoke_token(token_id, "admin:t")).revoked_at is not None  # again: as it was
        assert (await h.queue.submit(other, LEAF)).build.user == "carol"
        assert [b.user for b in await h.queue.recent(10)] == ["carol"]
        assert h.tree.asked == [LEAF]
        listed = {t.user: t for t in await h.queue.tokens()}
        assert listed["alice"].revoked_at is not None and listed["carol"].queued == 1
        with pytest.raises(NotFound):
            await h.queue.revoke_token("tbt-ffffffffffff", "admin:t")
        types = await h.event_types()
        assert types.count("test_build_token_created") == 2 and types.count("test_build_token_revoked") == 1

    run(tmp_path, body)


def test_bad_requests_are_400_before_anything_is_queued_or_resolved(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        secret = await h.token(rate="2/h", burst=2)
        for package, kw, why in (
            ("/etc/passwd", {}, "a path"),
            ("swarm-test/leaf-data; reboot", {}, "shell metacharacters"),
            (LEAF, {"use": ("ssl",)}, "allows no USE flags"),
            (LEAF, {"notify_email": "nobody"}, "notify"),
            (LEAF, {"webhook_url": "gopher://x"}, "webhook"),
        ):
            refused = await h.refused(secret, package, **kw)
            assert refused.http_status == 400 and why in refused.message, (package, kw)
        assert h.tree.asked == []
        # An unknown package is Portage's answer: asked once, and it costs the request.
        unknown = await h.refused(secret, "swarm-test/nothing")
        assert (unknown.http_status, unknown.message) == (
            400,
            "no package swarm-test/nothing in the swarm's tree",
        )
        assert (await h.refused(secret, "swarm-test/nothing")).http_status == 400
        assert h.tree.asked == ["swarm-test/nothing"]  # remembered
        assert (await h.refused(secret, LEAF)).http_status == 429
        assert await h.queue.recent(10) == [] and await h.queue.queued(10) == []
        assert "test_build_queued" not in await h.event_types()

    run(tmp_path, body)


def test_a_duplicate_while_queued_is_the_same_build_and_costs_nothing(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        secret = await h.token(rate="2/h", burst=2)
        bob = await h.token("bob")
        first = await h.queue.submit(secret, LEAF)
        again = await h.queue.submit(secret, LEAF)
        other_way = await h.queue.submit(secret, "=swarm-test/leaf-data-1")  # the same cpv
        assert again.existing and other_way.existing and not first.existing
        assert again.build.id == other_way.build.id == first.build.id
        assert (await h.queue.submit(bob, LEAF)).build.id != first.build.id  # another user's is theirs
        # Still one request left in the bucket: the duplicates took none.
        assert not (await h.queue.submit(secret, BROKEN)).existing
        assert (await h.refused(secret, "swarm-test/chain-a")).http_status == 429
        # With the bucket empty, a duplicate is still answered: asked another way too, once Portage told.
        assert (await h.queue.submit(secret, "=swarm-test/leaf-data-1")).build.id == first.build.id
        # Once it runs, asking again is a new build.
        await h.queue.started(first.build.id, "drone-1", "b-1")
        await h.clock.advance(1800)  # 2/h: one request back every 30 minutes
        assert not (await h.queue.submit(secret, LEAF)).existing

    run(tmp_path, body)


def test_duplicates_arriving_at_once_make_one_build(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        secret = await h.token(rate="1/h", burst=1)
        answers = await asyncio.gather(*(h.queue.submit(secret, LEAF) for _ in range(5)))
        assert len({a.build.id for a in answers}) == 1
        assert sorted(a.existing for a in answers) == [False, True, True, True, True]
        assert len(await h.queue.queued(10)) == 1 and h.tree.asked == [LEAF]

    run(tmp_path, body)


def test_requests_at_once_are_stored_in_a_few_transactions(tmp_path: Path) -> None:
    written: list[str] = []

    async def main() -> None:
        runner = StoreRunner(
            SqlStore(f"sqlite:///{tmp_path / 'swarm.db'}"), timing=lambda name, _s: written.append(name)
        )
        await runner.open()
        async with harness(tmp_path, runner=runner) as h:
            secrets = [await h.token(f"user-{i}") for i in range(40)]
            written.clear()
            done = await asyncio.gather(*(h.queue.submit(s, LEAF) for s in secrets))
            assert len({d.build.id for d in done}) == 40
            stored = await h.queue.recent(100)
            assert {b.user for b in stored} == {f"user-{i}" for i in range(40)}
            assert 1 <= written.count("put_test_builds") <= 3, written
            assert "put_test_build_token" not in written  # last use: from memory, and the builds at start

    asyncio.run(main())


def test_a_database_refusing_writes_queues_nothing_and_charges_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        runner = await quick_runner(tmp_path / "swarm.db")
        async with harness(tmp_path, runner=runner) as h:
            secret = await h.token(rate="1/h", burst=1)
            with locked(tmp_path / "swarm.db"):
                results = await asyncio.gather(
                    h.queue.submit(secret, LEAF), h.queue.submit(secret, BROKEN), return_exceptions=True
                )
            assert isinstance(results[0], StoreUnavailable), results
            assert isinstance(results[1], TestBuildRefused) and results[1].http_status == 429
            assert await h.queue.queued(10) == []
            # The request that failed was given back: the one request of the hour is still there.
            assert (await h.queue.submit(secret, LEAF)).build.state == "queued"

    asyncio.run(main())


def test_the_token_cap_and_the_global_cap_are_429_even_for_requests_at_once(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        capped = await h.token("alice", rate="100/h", burst=100, max_queued=2)
        results = await asyncio.gather(*(h.queue.submit(capped, p) for p in PACKAGES), return_exceptions=True)
        refusals = [r for r in results if isinstance(r, TestBuildRefused)]
        assert len(refusals) == 2 and {r.http_status for r in refusals} == {429}
        assert "2 test builds of this token are queued" in refusals[0].message
        assert refusals[0].retry_after_s is not None and refusals[0].retry_after_s > 0
        bob = await h.token("bob", rate="100/h", burst=100, max_queued=100)
        await h.queue.submit(bob, LEAF)
        full = await h.refused(bob, BROKEN)
        assert full.http_status == 429 and "queue is full (3 queued)" in full.message
        # A build that ran frees its place.
        first = (await h.queue.queued(1))[0]
        await h.queue.cancel(first.id, "admin:t")
        assert (await h.queue.submit(bob, BROKEN)).position == 3

    run(tmp_path, body, max_queued=3)


# -- the queue --------------------------------------------------------------------------------


def test_a_build_runs_its_course_with_an_event_for_each_step(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        woken: list[int] = []
        h.queue.on_queued(lambda: woken.append(1))
        secret = await h.token()
        one = (await h.queue.submit(secret, LEAF, notify_email="a@b.org", webhook_url="http://h/x")).build
        await h.clock.advance(1)
        two = await h.queue.submit(secret, BROKEN)
        assert woken == [1, 1] and two.position == 2
        assert two.estimate_s == 600.0  # two packages never built: 300 s each
        assert [b.id for b in await h.queue.queued(10)] == [one.id, two.build.id]
        with pytest.raises(InvalidArgument):
            await h.queue.finished(one.id, "queued", None, "", "", ())
        running = await h.queue.started(one.id, "drone-1", "b-1")
        assert (running.state, running.drone, running.build_id) == ("running", "drone-1", "b-1")
        with pytest.raises(FailedPrecondition):
            await h.queue.started(one.id, "drone-2", "b-2")
        assert h.queue.position(running) is None and (await h.queue.get(two.build.id)) is not None
        assert h.queue.position((await h.queue.queued(1))[0]) == 1
        await h.clock.advance(100)
        assert h.queue.estimate(two.build) == 500.0  # 200 s left of the first, then its own 300
        log = "\n".join(f"line {i}" for i in range(500))
        done = await h.queue.finished(one.id, "succeeded", 0, "", log, ("swarm-test/leaf-data-1-1.gpkg.tar",))
        assert done.state == "succeeded" and done.log_tail.endswith("line 499")
        assert done.finished_at == h.clock.time() and done.exit_code == 0
        await h.queue.notified(one.id, "sent")
        stored = await h.queue.get(one.id)
        assert stored is not None and stored.notified == "sent" and stored.packages == done.packages
        await h.queue.started(two.build.id, "drone-1", "b-2")
        failed = await h.queue.finished(two.build.id, "failed", 1, "emerge\nfailed  here", "die", ())
        assert failed.reason == "emerge failed here"
        with pytest.raises(FailedPrecondition):
            await h.queue.cancel(one.id, "admin:t")
        with pytest.raises(NotFound):
            await h.queue.cancel("tb-000000000000", "admin:t")
        assert [b.state for b in await h.queue.recent(10)] == ["failed", "succeeded"]
        assert [b.id for b in await h.queue.recent(10, "failed")] == [two.build.id]
        await h.events.flush()
        found = await h.events.query(limit=100, types=("test_build_failed",))
        assert found[0].data["user"] == "alice" and "secret" not in str(found[0].data)
        assert secret.partition(".")[2] not in str([e.data for e in await h.events.query(limit=1000)])
        assert (await h.event_types())[-5:] == [
            "test_build_queued",
            "test_build_started",
            "test_build_succeeded",
            "test_build_started",
            "test_build_failed",
        ]

    run(tmp_path, body)


def test_cancelling_a_running_build_asks_the_runner(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        asked: list[tuple[str, str]] = []
        h.queue.on_cancel(lambda build, by: asked.append((build.id, by)))
        secret = await h.token()
        build = (await h.queue.submit(secret, LEAF)).build
        await h.queue.started(build.id, "drone-1", "b-1")
        still = await h.queue.cancel(build.id, "admin:root")
        assert still.state == "running" and asked == [(build.id, "admin:root")]
        done = await h.queue.finished(build.id, "cancelled", None, "cancelled by admin:root", "", ())
        assert done.state == "cancelled"
        queued = (await h.queue.submit(secret, BROKEN)).build
        cancelled = await h.queue.cancel(queued.id, "admin:root")
        assert (cancelled.state, cancelled.reason) == ("cancelled", "cancelled by admin:root")
        assert len(asked) == 1

    run(tmp_path, body)


def test_a_restart_keeps_the_queue_and_the_buckets_and_fails_what_ran(tmp_path: Path) -> None:
    clock = ManualClock(1_800_000_000.0)

    async def before(h: Harness) -> tuple[str, str, str]:
        secret = await h.token(rate="3/h", burst=3)
        ran = (await h.queue.submit(secret, LEAF)).build
        waits = (await h.queue.submit(secret, BROKEN)).build
        await h.queue.started(ran.id, "drone-1", "b-1")
        return secret, ran.id, waits.id

    secret, ran, waits = run(tmp_path, before, clock=clock)

    async def after(h: Harness) -> None:
        assert [b.id for b in await h.queue.queued(10)] == [waits]
        lost = await h.queue.get(ran)
        assert lost is not None and lost.state == "failed" and "restarted" in lost.reason
        assert (await h.queue.submit(secret, BROKEN)).existing
        token = (await h.queue.tokens())[0]
        assert token.last_used_at == (await h.queue.get(waits)).queued_at  # type: ignore[union-attr]
        await h.queue.submit(secret, "swarm-test/chain-a")  # the third of the burst
        assert (await h.refused(secret, "swarm-test/chain-b")).http_status == 429

    run(tmp_path, after, clock=clock)


def test_prune_forgets_what_finished_before_the_cutoff(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        secret = await h.token()
        old = (await h.queue.submit(secret, LEAF)).build
        await h.queue.finished(old.id, "cancelled", None, "", "", ())
        cutoff = h.clock.time() + 1
        await h.clock.advance(10)
        new = (await h.queue.submit(secret, BROKEN)).build
        await h.queue.finished(new.id, "cancelled", None, "", "", ())
        waiting = (await h.queue.submit(secret, "swarm-test/chain-a")).build
        assert [b.id for b in await h.queue.prune(cutoff)] == [old.id]
        assert await h.queue.get(old.id) is None
        assert {b.id for b in await h.queue.recent(10)} == {new.id, waiting.id}

    run(tmp_path, body)


def test_token_limits_are_checked() -> None:
    async def body() -> None:
        queue = TestBuilds(None, None, Tree())  # type: ignore[arg-type]  # refused before any store call
        for user, burst, max_queued, why in (
            ("bad user", 1, 1, "user must be"),
            ("", 1, 1, "user must be"),
            ("alice", 0, 1, "burst must be"),
            ("alice", 1, 0, "max_queued must be"),
            ("alice", 1001, 1, "burst must be"),
        ):
            with pytest.raises(InvalidArgument, match=why):
                await queue.create_token(user, Rate(5, 3600), burst, max_queued, "admin:t")

    asyncio.run(body())


def test_the_log_tail_is_bounded() -> None:
    assert log_tail("a\nb\nc") == "a\nb\nc"
    lines = log_tail("\n".join(f"{i}" for i in range(200))).splitlines()
    assert len(lines) == LOG_TAIL_LINES and lines[-1] == "199"
    wide = log_tail("\n".join("é" * 1000 for _ in range(20)))
    assert len(wide.encode()) <= LOG_TAIL_BYTES and wide.endswith("é")


# -- views ------------------------------------------------------------------------------------


def test_the_public_view_shows_no_token_email_or_webhook_and_the_admin_view_does(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        secret = await h.token()
        asked = await h.queue.submit(secret, LEAF, notify_email="me@example.org", webhook_url="http://h/x")
        public = plain(views.build_view(h.queue, asked.build, "http://ctl:8100/binhost/test"))
        text = str(public)
        assert "me@example.org" not in text and "http://h/x" not in text and asked.build.token_id not in text
        assert public["position"] == 1 and public["estimate_s"] == 300.0 and public["state"] == "queued"
        assert public["queued_at"].endswith("Z") and public["started_at"] is None
        admin = plain(views.admin_build_view(h.queue, asked.build, ""))
        assert (admin["notify_email"], admin["webhook_url"], admin["token_id"]) == (
            "me@example.org",
            "http://h/x",
            asked.build.token_id,
        )
        assert set(public) < set(admin)
        await h.queue.started(asked.build.id, "d", "b")
        done = await h.queue.finished(
            asked.build.id, "succeeded", 0, "", "ok", ("swarm-test/leaf-data-1-1.gpkg.tar",)
        )
        shown = plain(views.build_view(h.queue, done, "http://ctl:8100/binhost/test/"))
        assert shown["packages"] == ["http://ctl:8100/binhost/test/swarm-test/leaf-data-1-1.gpkg.tar"]
        assert shown["position"] is None and shown["estimate_s"] is None
        submitted = plain(views.submitted_view(asked, "/api/v1/test-build/" + asked.build.id))
        assert submitted["links"]["log"] == f"/api/v1/test-build/{asked.build.id}/log"
        info = (await h.queue.tokens())[0]
        token = plain(views.token_view(info))
        assert token["rate"] == "5/h" and secret not in str(token) and "secret_hash" not in token
        assert plain(views.new_token_view(info, secret))["secret"] == secret
        assert {f.name for f in fields(views.TestBuildTokenView)} | {"secret"} == set(
            plain(views.new_token_view(info, secret))
        )

    run(tmp_path, body)


# -- the agent's steps (the real emerge runs are tests/test_testbuild_runs.py's) ---------------------


def test_a_test_build_takes_only_binaries_from_the_merge_list_as_emerge_prints_it_in_colour_or_not() -> None:
    printed = [
        "These are the packages that would be merged, in order:",
        "Calculating dependencies ... done!",
        "[binary  N     ] swarm-test/chain-a-1-1 ",
        "[ebuild  N     ] swarm-test/chain-b-1 ",
        # --verbose, and emerge's colours when NOCOLOR is off (as printed by Portage 3.0).
        "[\x1b[35mbinary\x1b[39;49;00m  \x1b[32;01mN\x1b[39;49;00m \x1b[35;01mg\x1b[39;49;00m   ] "
        "\x1b[35mswarm-test/diamond-base-1-1::gentoo\x1b[39;49;00m  10 KiB",
        "[\x1b[32mebuild\x1b[39;49;00m  \x1b[32;01mN\x1b[39;49;00m     ] "
        "\x1b[32mswarm-test/diamond-left-1::gentoo\x1b[39;49;00m  0 KiB",
        '[ebuild     U  ] app-misc/foo-2::gentoo [1::gentoo] USE="-doc" 0 KiB',
        '[blocks B      ] app-misc/old ("app-misc/old" is soft blocking app-misc/foo-2)',
        "Total: 5 packages (4 new, 1 upgrade, 2 binaries), Size of downloads: 10 KiB",
    ]
    rows = [row for line in printed if (row := merge_row(line)) is not None]
    assert merge_list(rows) == MergeList(
        binary=("swarm-test/chain-a-1-1", "swarm-test/diamond-base-1-1"),
        source=("swarm-test/chain-b-1", "swarm-test/diamond-left-1", "app-misc/foo-2"),
    )
    assert refusal(("swarm-test/chain-b-1",)).startswith(
        " * dependency swarm-test/chain-b-1 is not in staging"
    )
    assert " * dependencies a/b-1, c/d-2 are not in staging" in refusal(("a/b-1", "c/d-2"))


def test_a_regular_build_is_one_emerge_and_a_test_build_never_merges_its_package() -> None:
    [regular] = build_steps("app-misc/foo-1", "app-misc/foo", test_build=False)
    assert regular.args == ("--usepkg-exclude=app-misc/foo", "=app-misc/foo-1") and not regular.note
    check, deps, build = build_steps("app-misc/foo-1", "app-misc/foo", test_build=True)
    assert [s.stage for s in (check, deps, build)] == [Stage.CHECK, Stage.DEPS, Stage.BUILD]
    assert "--pretend" in check.args and "--onlydeps" in deps.args and "--onlydeps-with-rdeps=n" in deps.args
    assert build.args == ("--buildpkgonly", *regular.args)
    assert all(s.args[-2:] == regular.args for s in (check, deps, build))
