"""Views of test builds (controller/testbuilds.py) and their tokens.

The public view never shows a token id, an email address or a webhook;
the admin view adds them. A token's view never shows its secret, which
NewTestBuildTokenView carries once, when it is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from swarm.clock import iso
from swarm.controller.testbuild_rules import USER_RE
from swarm.controller.testbuilds import State, Submitted, TestBuild, TestBuilds, TokenInfo
from swarm.controller.web.views.base import Doc, Format, Pattern, Range, Timestamp

Count = Annotated[int, Range(0)]
User = Annotated[str, Pattern(USER_RE), Doc("the token's user")]
Seconds = Annotated[float | None, Range(0), Doc("queued only: seconds until it is done, roughly")]


@dataclass(frozen=True, slots=True)
class TestBuildView:
    """A test build as anyone may see it."""

    __test__ = False  # not a pytest class, whatever its name

    id: str
    package: Annotated[str, Doc("the atom as asked")]
    cpv: Annotated[str, Doc("what it resolved to in the swarm's tree")]
    use: Annotated[tuple[str, ...], Doc("USE flags asked for")]
    user: User
    state: State
    queued_at: Annotated[str, Format("date-time")]
    started_at: Timestamp
    finished_at: Timestamp
    drone: Annotated[str, Doc('the drone that ran it ("" until it runs)')]
    exit_code: int | None
    reason: Annotated[str, Doc('why it failed or was cancelled ("" otherwise)')]
    log_tail: Annotated[str, Doc("the last lines of the build log (50 lines, 8 KiB at most)")]
    packages: Annotated[
        tuple[str, ...], Doc("URLs of its binary packages under /binhost/test/: untested, never released")
    ]
    position: Annotated[int | None, Range(1), Doc("queued only: 1 runs next")]
    estimate_s: Seconds


@dataclass(frozen=True, slots=True)
class AdminTestBuildView(TestBuildView):
    """A test build as admins see it: who asked, and where the result goes."""

    token_id: str
    build_id: Annotated[str, Doc('the StartBuild\'s build id ("" until it runs)')]
    notify_email: Annotated[str, Doc('"" for none')]
    webhook_url: Annotated[str, Doc('"" for none')]
    notified: Annotated[str, Doc('"" not yet, "sent", or "failed: why"')]


@dataclass(frozen=True, slots=True)
class TestBuildsPage:
    __test__ = False

    builds: tuple[TestBuildView, ...]


@dataclass(frozen=True, slots=True)
class AdminTestBuildsPage:
    builds: tuple[AdminTestBuildView, ...]


@dataclass(frozen=True, slots=True)
class TestBuildLinks:
    __test__ = False

    self: Annotated[str, Doc("GET: the build")]
    log: Annotated[str, Doc("GET: its log (?follow=1 streams it)")]


@dataclass(frozen=True, slots=True)
class SubmittedView:
    """A test build queued (or the same one queued before: ``existing``)."""

    id: str
    state: State
    position: Annotated[int | None, Range(1), Doc("1 runs next")]
    estimate_s: Seconds
    existing: Annotated[bool, Doc("the same package and USE were queued for this user already")]
    links: TestBuildLinks


@dataclass(frozen=True, slots=True)
class TestBuildTokenView:
    """A test-build token, never its secret."""

    __test__ = False

    id: str
    user: User
    rate: Annotated[str, Doc("requests per period, e.g. 5/h")]
    burst: Annotated[int, Range(1)]
    max_queued: Annotated[int, Range(1)]
    created_at: Annotated[str, Format("date-time")]
    created_by: str
    revoked_at: Timestamp
    last_used_at: Timestamp
    queued: Annotated[Count, Doc("its builds queued now")]


@dataclass(frozen=True, slots=True)
class NewTestBuildTokenView(TestBuildTokenView):
    """A token just made: its secret is shown this once."""

    secret: Annotated[str, Doc("Authorization: Bearer SECRET; shown only now")]


@dataclass(frozen=True, slots=True)
class TestBuildTokensPage:
    __test__ = False

    tokens: tuple[TestBuildTokenView, ...]


def package_urls(packages: tuple[str, ...], base: str) -> tuple[str, ...]:
    """The packages' URLs: ``base`` is the test binhost's (…/binhost/test)."""
    return tuple(f"{base.rstrip('/')}/{p.lstrip('/')}" for p in packages)


def build_view(queue: TestBuilds, build: TestBuild, base: str) -> TestBuildView:
    queued_at = iso(build.queued_at)
    assert queued_at is not None
    return TestBuildView(
        id=build.id,
        package=build.package,
        cpv=build.cpv,
        use=build.use,
        user=build.user,
        state=cast(State, build.state),
        queued_at=queued_at,
        started_at=iso(build.started_at),
        finished_at=iso(build.finished_at),
        drone=build.drone,
        exit_code=build.exit_code,
        reason=build.reason,
        log_tail=build.log_tail,
        packages=package_urls(build.packages, base),
        position=queue.position(build),
        estimate_s=queue.estimate(build) if build.state == "queued" else None,
    )


def admin_build_view(queue: TestBuilds, build: TestBuild, base: str) -> AdminTestBuildView:
    v = build_view(queue, build, base)
    return AdminTestBuildView(
        **{name: getattr(v, name) for name in TestBuildView.__dataclass_fields__},
        token_id=build.token_id,
        build_id=build.build_id,
        notify_email=build.notify_email,
        webhook_url=build.webhook_url,
        notified=build.notified,
    )


def submitted_view(s: Submitted, self_url: str) -> SubmittedView:
    b = s.build
    return SubmittedView(
        id=b.id,
        state=cast(State, b.state),
        position=s.position,
        estimate_s=s.estimate_s if b.state == "queued" else None,
        existing=s.existing,
        links=TestBuildLinks(self=self_url, log=self_url + "/log"),
    )


def token_view(t: TokenInfo) -> TestBuildTokenView:
    created = iso(t.created_at)
    assert created is not None
    return TestBuildTokenView(
        id=t.id,
        user=t.user,
        rate=str(t.rate),
        burst=t.burst,
        max_queued=t.max_queued,
        created_at=created,
        created_by=t.created_by,
        revoked_at=iso(t.revoked_at),
        last_used_at=iso(t.last_used_at),
        queued=t.queued,
    )


def new_token_view(t: TokenInfo, secret: str) -> NewTestBuildTokenView:
    v = token_view(t)
    return NewTestBuildTokenView(
        **{name: getattr(v, name) for name in TestBuildTokenView.__dataclass_fields__}, secret=secret
    )
