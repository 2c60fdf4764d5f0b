"""Views of the admin tier's own objects: join tokens, keys and sessions,
logs, terminals and one-off commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from swarm.clock import iso
from swarm.controller.channel_frames import ExitInfo
from swarm.controller.execs import ExecResult
from swarm.controller.recording import RecordingInfo
from swarm.controller.shellsession import ShellInfo
from swarm.controller.store.records import TokenRecord
from swarm.controller.web.views.base import Doc, Range, Timestamp

Count = Annotated[int, Range(0)]
TokenState = Literal["active", "used", "revoked", "expired"]


@dataclass(frozen=True, slots=True)
class TokenView:
    id: str
    name: Annotated[str | None, Doc("only this drone name may use it")]
    state: TokenState
    created_at: Timestamp
    expires_at: Timestamp
    created_by: str
    used_at: Timestamp
    used_by: str | None
    revoked_at: Timestamp


def _token_state(t: TokenRecord, now: float) -> TokenState:
    if t.revoked_at is not None:
        return "revoked"
    if t.used_at is not None:
        return "used"
    return "expired" if t.expires_at <= now else "active"


def token_view(t: TokenRecord, now: float) -> TokenView:
    return TokenView(
        t.id,
        t.name,
        _token_state(t, now),
        iso(t.created_at),
        iso(t.expires_at),
        t.created_by,
        iso(t.used_at),
        t.used_by,
        iso(t.revoked_at),
    )


@dataclass(frozen=True, slots=True)
class NewTokenView(TokenView):
    """A token just made: its secret is shown this once."""

    token: str
    ca_pin: str
    enroll_port: int | None
    command: Annotated[str, Doc("the swarm-agent enroll command line for the drone")]


def new_token_view(
    t: TokenRecord, now: float, token: str, ca_pin: str, port: int | None, command: str
) -> NewTokenView:
    v = token_view(t, now)
    return NewTokenView(
        v.id,
        v.name,
        v.state,
        v.created_at,
        v.expires_at,
        v.created_by,
        v.used_at,
        v.used_by,
        v.revoked_at,
        token=token,
        ca_pin=ca_pin,
        enroll_port=port,
        command=command,
    )


@dataclass(frozen=True, slots=True)
class TokensView:
    tokens: Annotated[tuple[TokenView, ...], Doc("newest first; never their secrets")]


@dataclass(frozen=True, slots=True)
class TokenRevokedView:
    revoked: str


@dataclass(frozen=True, slots=True)
class WhoamiView:
    key: Annotated[str, Doc("the name of the key")]


@dataclass(frozen=True, slots=True)
class KeyPrincipalView:
    """A request authenticated with X-Admin-Key: no session, nothing ends."""

    key: Annotated[str, Doc("the name of the key (the audit trail)")]
    via: Literal["key"]
    expires_at: None = None


@dataclass(frozen=True, slots=True)
class BrowserSessionView:
    """A browser session and when it ends."""

    key: Annotated[str, Doc("the name of the key (the audit trail)")]
    via: Literal["session"]
    csrf_token: Annotated[str, Doc("send it as X-CSRF-Token with every change")]
    created_at: Timestamp
    expires_at: Annotated[Timestamp, Doc("when the session ends unless used before")]
    ends_at: Annotated[Timestamp, Doc("when the session ends however active (absolute lifetime)")]
    idle_timeout_s: Annotated[float, Range(0)]


@dataclass(frozen=True, slots=True)
class LoggedOutView:
    logged_out: str


@dataclass(frozen=True, slots=True)
class KeyView:
    name: str
    sessions: Annotated[Count, Doc("its open browser sessions")]


@dataclass(frozen=True, slots=True)
class KeysView:
    keys: tuple[KeyView, ...]


@dataclass(frozen=True, slots=True)
class NewKeyView:
    name: str
    key: Annotated[str, Doc("shown this once; only its SHA-256 is kept")]


@dataclass(frozen=True, slots=True)
class KeyFileView:
    path: str
    action: Literal["deleted", "kept"]


@dataclass(frozen=True, slots=True)
class KeyRemovedView:
    removed: str
    sessions_ended: Count
    admin_key_file: Annotated[
        KeyFileView | None,
        Doc(
            "what became of --admin-key-file when removing 'admin': deleted (it held this key) or kept "
            "(it holds another key, which becomes 'admin' at the next start); null otherwise"
        ),
    ]


@dataclass(frozen=True, slots=True)
class LogTailView:
    source: str
    lines: tuple[str, ...]
    notices: Annotated[tuple[str, ...], Doc("the file read, rotations")]
    truncated: Annotated[bool, Doc("cut at 4 MiB")]


@dataclass(frozen=True, slots=True)
class DroneLogView(LogTailView):
    drone: str


@dataclass(frozen=True, slots=True)
class ExitView:
    exit_code: Annotated[int | None, Doc("null if it did not exit by itself")]
    signal: Annotated[int | None, Doc("the signal that ended it")]
    reason: str
    timed_out: bool


def exit_view(info: ExitInfo | None) -> ExitView | None:
    return None if info is None else ExitView(info.exit_code, info.signal, info.reason, info.timed_out)


@dataclass(frozen=True, slots=True)
class RecordingLinkView:
    url: str
    bytes: Count
    truncated: bool


def recording_url(session_id: str) -> str:
    return f"/admin/api/shells/{session_id}/recording"


Via = Literal["agent", "ssh", "local"]


@dataclass(frozen=True, slots=True)
class ShellView:
    """A terminal session."""

    id: str
    via: Annotated[
        Via,
        Doc("agent: under the drone's agent; ssh: ssh -tt from the controller; local: on its machine"),
    ]
    drone: str
    drone_id: str
    opened_by: Annotated[str, Doc("name of the admin key that opened it")]
    opened_at: Timestamp
    state: Literal["opening", "attached", "detached", "closing", "closed"]
    rows: Count
    cols: Count
    last_activity_at: Timestamp
    detached_at: Timestamp
    closed_at: Timestamp
    close_reason: str | None
    closed_by: str | None
    exit: ExitView | None
    bytes_in: Count
    bytes_out: Count
    recording: RecordingLinkView


def shell_view(info: ShellInfo) -> ShellView:
    return ShellView(
        id=info.id,
        via=info.via,  # type: ignore[arg-type]
        drone=info.drone,
        drone_id=info.drone_id,
        opened_by=info.opened_by,
        opened_at=iso(info.opened_at),
        state=info.state,  # type: ignore[arg-type]
        rows=info.rows,
        cols=info.cols,
        last_activity_at=iso(info.last_activity_at),
        detached_at=iso(info.detached_at),
        closed_at=iso(info.closed_at),
        close_reason=info.close_reason,
        closed_by=info.closed_by,
        exit=exit_view(info.exit),
        bytes_in=info.bytes_in,
        bytes_out=info.bytes_out,
        recording=RecordingLinkView(recording_url(info.id), info.recording_bytes, info.recording_truncated),
    )


@dataclass(frozen=True, slots=True)
class RecordingView:
    """An asciinema v2 cast on disk."""

    id: str
    drone: str
    drone_id: str
    opened_by: str
    started_at: Timestamp
    bytes: Count
    url: str


def recording_view(info: RecordingInfo) -> RecordingView:
    return RecordingView(
        info.id,
        info.drone,
        info.drone_id,
        info.opened_by,
        iso(info.started_at),
        info.size,
        recording_url(info.id),
    )


@dataclass(frozen=True, slots=True)
class ShellsView:
    shells: Annotated[tuple[ShellView, ...], Doc("live first, then recently ended")]
    recordings: tuple[RecordingView, ...]


@dataclass(frozen=True, slots=True)
class ShellReply:
    shell: ShellView


@dataclass(frozen=True, slots=True)
class ExecView(ExitView):
    """A command's output and how it ended."""

    drone: str
    via: Via
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_s: Annotated[float, Range(0)]


def exec_view(result: ExecResult, via: str) -> ExecView:
    ended = result.exit
    return ExecView(
        exit_code=ended.exit_code,
        signal=ended.signal,
        reason=ended.reason,
        timed_out=ended.timed_out,
        drone=result.drone,
        via=via,  # type: ignore[arg-type]
        stdout=result.stdout.decode(errors="replace"),
        stderr=result.stderr.decode(errors="replace"),
        stdout_truncated=result.stdout_truncated,
        stderr_truncated=result.stderr_truncated,
        duration_s=round(result.duration, 3),
    )
