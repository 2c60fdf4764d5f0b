"""What travels on a channel (shell.proto), as the controller's core sees it.

A channel is asked for with a request (``ShellRequest``, ``ExecRequest``,
``LogRequest``: the OpenChannel the gateway sends, fleet.Link.open_channel)
and then carries frames: from the far end ``Output``, ``Stderr`` and, last,
``Closed`` with the exit status; to it ``Input``, ``Resize`` and ``Close``.
channel_serde.py is the one place they become protobuf and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from swarm.printable import printable
from swarm.protocol import CHANNELS_EXEC, CHANNELS_LOG, CHANNELS_SHELL

MAX_REASON = 500  # characters of an exit's reason kept
MAX_CLOSE_REASON = 200  # characters of the reason the controller closes a channel for


@dataclass(frozen=True, slots=True)
class ExitInfo:
    exited: bool
    exit_code: int | None
    signal: int | None
    reason: str
    timed_out: bool = False

    @classmethod
    def of(cls, exited: bool, exit_code: int, signal: int, reason: str, timed_out: bool = False) -> ExitInfo:
        """As a Close says it (a code only for a normal exit, signal 0 for none),
        the reason cleaned of control characters and cut."""
        return cls(
            exited=exited,
            exit_code=exit_code if exited else None,
            signal=signal or None,
            reason=printable(reason, MAX_REASON),
            timed_out=timed_out,
        )


# -- requests (the controller asks, over the control stream) ------------------------------


@dataclass(frozen=True, slots=True)
class ShellRequest:
    """A login shell under a PTY of this size."""

    feature: ClassVar[str] = CHANNELS_SHELL
    rows: int
    cols: int


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """``sh -c command`` without a PTY, killed by the agent after ``timeout`` seconds."""

    feature: ClassVar[str] = CHANNELS_EXEC
    command: str
    timeout: float


@dataclass(frozen=True, slots=True)
class LogRequest:
    """A named log source: its last ``lines``, then (``follow``) what is written to it."""

    feature: ClassVar[str] = CHANNELS_LOG
    source: str
    lines: int
    follow: bool


ChannelRequest = ShellRequest | ExecRequest | LogRequest


# -- frames from the far end ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """PTY output; an exec's stdout; a log's bytes."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Stderr:
    """An exec's stderr; a log's notice (rotated, truncated)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The far end's last frame: how the process ended, or why nothing ran
    (``error``: "not_found" or "invalid_argument" for a log source)."""

    exit: ExitInfo
    error: str = ""


InFrame = Output | Stderr | Closed


# -- frames to the far end ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Input:
    """Keystrokes for the PTY."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Resize:
    rows: int
    cols: int


@dataclass(frozen=True, slots=True)
class Close:
    """End the channel: the far end hangs up and answers with its ``Closed``."""

    reason: str  # at most MAX_CLOSE_REASON characters


OutFrame = Input | Resize | Close
