"""Notifications of finished test builds: an email through the configured
SMTP server and/or a JSON POST to the requester's webhook.

Each notice is delivered once per channel, each channel retried with
backoff on a transient failure (a refused connection, an SMTP 4xx, an
HTTP 5xx, 408 or 429) and given up on a permanent one (an SMTP 5xx, any
other HTTP 4xx). Notices wait in a bounded queue read by a few workers;
``send`` never waits: with the queue full it answers False and the
caller records the notice as failed. The outcome of each notice, summed
up over its channels ("sent" or "failed: <why>"), goes to the ``done``
callback.

Email goes out with the standard library's smtplib in a thread (the
event loop never waits on a mail server), upgraded with STARTTLS when the
server offers it (``auto``), always (``required``: a server without it is
a permanent failure) or never (``off``). A user name and password in the
URL (smtp://USER:PASS@host:port) log in, never over plaintext unless
STARTTLS is off.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiohttp

from swarm.backoff import Backoff
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

StartTls = Literal["required", "auto", "off"]
STARTTLS_MODES: tuple[StartTls, ...] = ("required", "auto", "off")
QUEUE_LIMIT = 100
WORKERS = 2
ATTEMPTS = 5
# Seconds for one SMTP conversation or one webhook POST; short, since a mail
# thread still talking when the controller stops holds up its exit.
TIMEOUT = 10.0
SENT = "sent"
# HTTP answers worth another try: the receiver is busy or down, not refusing.
HTTP_RETRY = frozenset({408, 425, 429})


class NotifyError(Exception):
    """One delivery attempt failed; ``permanent``: another try would fail the same."""

    def __init__(self, why: str, *, permanent: bool = False) -> None:
        super().__init__(why)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    url: str  # smtp://[USER:PASS@]host[:port]
    sender: str  # the From address
    starttls: StartTls = "auto"
    ca_file: Path | None = None  # trust this CA for STARTTLS (default: the system's)
    timeout: float = TIMEOUT

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "smtp" or not parts.hostname:
            raise ValueError(f"the SMTP URL must be smtp://HOST[:PORT], not {self.url!r}")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("the SMTP URL takes no path or query")
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        if "@" not in self.sender:
            raise ValueError(f"the sender must be an email address, not {self.sender!r}")
        if self.starttls not in STARTTLS_MODES:
            raise ValueError(f"starttls must be one of {', '.join(STARTTLS_MODES)}")


@dataclass(frozen=True, slots=True)
class Notice:
    """What to tell about one finished test build, and where."""

    id: str  # the test build's id: the key of ``done``
    email: str  # "" none
    webhook: str  # "" none
    subject: str
    text: str  # the email's body
    payload: dict[str, Any] = field(default_factory=dict)  # the webhook's JSON


Done = Callable[[str, str], Awaitable[None]]


class Notifier:
    def __init__(
        self,
        smtp: SmtpSettings | None,
        done: Done,
        *,
        backoff: Backoff | None = None,
        attempts: int = ATTEMPTS,
        queue_limit: int = QUEUE_LIMIT,
        workers: int = WORKERS,
        webhook_timeout: float = TIMEOUT,
    ) -> None:
        self.smtp = smtp
        self._done = done
        self._backoff = backoff or Backoff(initial=2.0, cap=60.0)
        self._attempts = attempts
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(queue_limit)
        self._workers = workers
        self._webhook_timeout = webhook_timeout
        self._tls: ssl.SSLContext | None = None
        self._tasks = TaskSet("notify")
        self.sent = 0
        self.failed = 0

    async def start(self) -> None:
        if self.smtp is not None:
            # Read once, in a thread: a CA file is a file.
            self._tls = await asyncio.to_thread(_tls_context, self.smtp.ca_file)
        timeout = aiohttp.ClientTimeout(total=self._webhook_timeout)
        session = aiohttp.ClientSession(timeout=timeout)
        self._tasks.spawn(self._close_at_end(session), "session")
        for i in range(self._workers):
            self._tasks.spawn(self._work(session), f"worker-{i}")

    async def stop(self) -> None:
        # Notices still queued are lost with the process; their test builds say
        # notified "" (not yet), which the admin view shows.
        await self._tasks.close()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def send(self, notice: Notice) -> bool:
        """Queue the notice; False when the queue is full (nothing is sent)."""
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            log.warning("notification queue full (%d): %s not notified", self._queue.maxsize, notice.id)
            return False
        return True

    @staticmethod
    async def _close_at_end(session: aiohttp.ClientSession) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await session.close()

    async def _work(self, session: aiohttp.ClientSession) -> None:
        while True:
            notice = await self._queue.get()
            try:
                summary = await self.deliver(notice, session)
            except Exception as exc:  # a bug must not end the worker
                log.exception("notice %s failed in the controller", notice.id)
                summary = f"failed: internal error ({type(exc).__name__})"
            if summary == SENT:
                self.sent += 1
            else:
                self.failed += 1
            try:
                await self._done(notice.id, summary)
            except Exception:
                log.exception("recording the notification of %s failed", notice.id)

    async def deliver(self, notice: Notice, session: aiohttp.ClientSession) -> str:
        """Every channel of the notice, side by side: "sent", or "failed: <why>"."""
        channels: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if notice.email:
            channels.append(("email", lambda: self._mail(notice)))
        if notice.webhook:
            channels.append(("webhook", lambda: self._post(notice, session)))
        if not channels:
            return SENT
        results = await asyncio.gather(*(self._retrying(notice.id, name, call) for name, call in channels))
        failures = [f"{name}: {why}" for (name, _), why in zip(channels, results, strict=True) if why]
        if not failures:
            return SENT
        sent = [name for (name, _), why in zip(channels, results, strict=True) if not why]
        also = f" ({', '.join(sent)} sent)" if sent else ""
        return f"failed: {'; '.join(failures)}{also}"[:500]

    async def _retrying(self, id: str, channel: str, call: Callable[[], Awaitable[None]]) -> str:
        """ "" when delivered, else why not (after the last attempt)."""
        why = ""
        for attempt in range(self._attempts):
            try:
                await call()
            except NotifyError as exc:
                why = str(exc)
                if exc.permanent:
                    log.warning("%s of %s refused: %s", channel, id, why)
                    return why
            else:
                log.info("%s of %s sent", channel, id)
                return ""
            if attempt + 1 < self._attempts:
                delay = self._backoff.delay(attempt)
                log.warning(
                    "%s of %s: attempt %d/%d failed (%s); next in %.1fs",
                    channel,
                    id,
                    attempt + 1,
                    self._attempts,
                    why,
                    delay,
                )
                await asyncio.sleep(delay)
        log.error("%s of %s given up after %d attempts: %s", channel, id, self._attempts, why)
        return f"{why} (after {self._attempts} attempts)"

    async def _mail(self, notice: Notice) -> None:
        if self.smtp is None:
            raise NotifyError("no SMTP server is configured (--smtp-url)", permanent=True)
        message = EmailMessage()
        message["From"] = self.smtp.sender
        message["To"] = notice.email
        message["Subject"] = notice.subject
        message.set_content(notice.text)
        await asyncio.to_thread(_send_mail, self.smtp, self._tls, message)

    async def _post(self, notice: Notice, session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(notice.webhook, json=notice.payload, allow_redirects=False) as response:
                if response.status < 300:
                    return
                permanent = response.status < 500 and response.status not in HTTP_RETRY
                raise NotifyError(f"HTTP {response.status}", permanent=permanent)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NotifyError(f"{type(exc).__name__}: {exc}"[:300]) from None


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)


def _send_mail(settings: SmtpSettings, tls: ssl.SSLContext | None, message: EmailMessage) -> None:
    """One SMTP conversation (blocking: run in a thread)."""
    parts = urlsplit(settings.url)
    host, port = parts.hostname or "", parts.port or 25
    try:
        with smtplib.SMTP(host, port, timeout=settings.timeout) as smtp:
            smtp.ehlo()
            secure = False
            if settings.starttls != "off" and smtp.has_extn("starttls"):
                smtp.starttls(context=tls)
                smtp.ehlo()
                secure = True
            elif settings.starttls == "required":
                raise NotifyError(
                    f"{host}:{port} does not offer STARTTLS (--smtp-starttls required)", permanent=True
                )
            if parts.username:
                if not secure and settings.starttls != "off":
                    raise NotifyError("not sending the SMTP password over plaintext", permanent=True)
                smtp.login(unquote(parts.username), unquote(parts.password or ""))
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise NotifyError(f"recipient refused: {exc.recipients}"[:300], permanent=min(codes) >= 500) from None
    except smtplib.SMTPResponseException as exc:
        raise NotifyError(
            f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}"[:300],
            permanent=exc.smtp_code >= 500,
        ) from None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        # Certificate errors included: the admin may fix the server, a try later may work.
        raise NotifyError(f"{type(exc).__name__}: {exc}"[:300]) from None


def _text(said: bytes | str) -> str:
    return said.decode(errors="replace") if isinstance(said, bytes) else said
