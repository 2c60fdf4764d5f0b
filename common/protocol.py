"""Protocol revision and feature names, shared by agent and controller.

Each side lists what it speaks in its first message (Hello.features,
Welcome.features; fleet.proto says what every name means) and uses of
the other's only what the other listed. A peer that lists nothing
predates feature lists and is taken to speak all of revision 1.

A feature is added here, and to the .proto comment, when a later change
gives a peer something it may not have; a name is never reused.
"""

from __future__ import annotations

from collections.abc import Iterable

PROTOCOL_REVISION = 1

# What the controller speaks (Welcome.features).
UNKNOWN_KINDS_IGNORED = "unknown-kinds-ignored"
NAMES_BOUND = "names-bound"
MISSED_PINGS = "missed-pings"
BUILD_LOG_RESUME = "build-log-resume"
STREAM_BOUNDS = "stream-bounds"
ONE_INSTANCE = "one-instance"
CONTROLLER_FEATURES = (
    UNKNOWN_KINDS_IGNORED,
    NAMES_BOUND,
    MISSED_PINGS,
    BUILD_LOG_RESUME,
    STREAM_BOUNDS,
    ONE_INSTANCE,
)

# What the agent speaks (Hello.features).
CHANNELS_SHELL = "channels.shell"
CHANNELS_EXEC = "channels.exec"
CHANNELS_LOG = "channels.log"
BUILDS = "builds"
RESTART_SERVICE = "restart-service"
PONG_CHECKS = "pong-checks"
DUPLICATE_NOTICE = "duplicate-notice"
PONG_IN_HEARTBEAT = "pong-in-heartbeat"
# ApplyPayload is applied and Hello.payloads filled (payload.proto); the
# controller deploys payloads only to agents that list it.
PAYLOADS = "payloads"
# StartBuild.test_build is honoured: the build goes to a scratch PKGDIR of its own.
TEST_BUILDS = "test-builds"
AGENT_FEATURES = (
    CHANNELS_SHELL,
    CHANNELS_EXEC,
    CHANNELS_LOG,
    BUILDS,
    RESTART_SERVICE,
    PONG_CHECKS,
    UNKNOWN_KINDS_IGNORED,
    DUPLICATE_NOTICE,
    PONG_IN_HEARTBEAT,
    PAYLOADS,
    TEST_BUILDS,
)

MAX_FEATURES = 64
MAX_FEATURE_LENGTH = 64


def read_features(names: Iterable[str]) -> tuple[str, ...]:
    """A peer's feature list as kept: bounded, without empties or repeats, in order."""
    kept: dict[str, None] = {}
    for name in names:
        if len(kept) >= MAX_FEATURES:
            break
        if name and len(name) <= MAX_FEATURE_LENGTH:
            kept[name] = None
    return tuple(kept)


# Added after feature lists were: a peer without a list does not speak these.
REVISION_1_LATER = frozenset({DUPLICATE_NOTICE, ONE_INSTANCE, PONG_IN_HEARTBEAT, PAYLOADS, TEST_BUILDS})


def speaks(features: tuple[str, ...], feature: str) -> bool:
    """Whether a peer that sent ``features`` speaks ``feature``: an empty list
    is a peer from before feature lists, which speaks all of revision 1 as
    it was then (none of REVISION_1_LATER)."""
    if not features:
        return feature not in REVISION_1_LATER
    return feature in features
