"""Channels on the wire: the one place where channel_frames become shell.proto
messages and back (serde.py does the same for the control stream)."""

from __future__ import annotations

from swarm.controller.channel_frames import (
    ChannelRequest,
    Close,
    Closed,
    ExecRequest,
    ExitInfo,
    InFrame,
    Input,
    LogRequest,
    OutFrame,
    Output,
    Resize,
    ShellRequest,
    Stderr,
)
from swarm.printable import printable
from swarm.v1 import gateway_pb2, shell_pb2

Kind = shell_pb2.OpenChannel
MAX_ERROR = 64


def open_channel(channel_id: str, request: ChannelRequest) -> gateway_pb2.ControllerMessage:
    """The OpenChannel asking a drone to dial in ``channel_id``."""
    match request:
        case ShellRequest(rows, cols):
            message = Kind(channel_id=channel_id, kind=Kind.SHELL, rows=rows, cols=cols)
        case ExecRequest(command, timeout):
            message = Kind(channel_id=channel_id, kind=Kind.EXEC, command=command, timeout_s=timeout)
        case LogRequest(source, lines, follow):
            message = Kind(channel_id=channel_id, kind=Kind.LOG, source=source, lines=lines, follow=follow)
    return gateway_pb2.ControllerMessage(open_channel=message)


def exit_info(close: shell_pb2.Close) -> ExitInfo:
    return ExitInfo.of(close.exited, close.exit_code, close.signal, close.reason, close.timed_out)


def read_frame(frame: shell_pb2.ShellFrame) -> InFrame | None:
    """A frame from the far end, or None for one that means nothing to the
    controller after the attach (an empty one, a second attach, input or
    resize, or a kind of a newer protocol revision): it is skipped."""
    kind = frame.WhichOneof("body")
    if kind == "output":
        return Output(frame.output)
    if kind == "stderr":
        return Stderr(frame.stderr)
    if kind == "close":
        return Closed(exit_info(frame.close), printable(frame.close.error, MAX_ERROR))
    return None


def write_frame(frame: OutFrame) -> shell_pb2.ShellFrame:
    match frame:
        case Input(data):
            return shell_pb2.ShellFrame(input=data)
        case Resize(rows, cols):
            return shell_pb2.ShellFrame(resize=shell_pb2.Resize(rows=rows, cols=cols))
        case Close(reason):
            return shell_pb2.ShellFrame(close=shell_pb2.Close(reason=reason))
