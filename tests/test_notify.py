"""Notifications of finished test builds (controller/notify.py) against a
real SMTP server (aiosmtpd, with and without STARTTLS) and a real aiohttp
webhook receiver, both in the test's event loop on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.handlers import AsyncMessage
from aiosmtpd.smtp import SMTP

from swarm.backoff import Backoff
from swarm.controller.ca import CertificateAuthority
from swarm.controller.notify import Notice, Notifier, SmtpSettings, StartTls

FAST = Backoff(initial=0.01, cap=0.02)


class Inbox(AsyncMessage):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Message] = []
        self.arrived = asyncio.Event()

    async def handle_message(self, message: Message) -> None:
        self.messages.append(message)
        self.arrived.set()


@asynccontextmanager
async def smtp_server(
    tls: ssl.SSLContext | None, *, require: bool = False
) -> AsyncIterator[tuple[Inbox, int]]:
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(inbox, tls_context=tls, require_starttls=require, hostname="mail.test"), "127.0.0.1", 0
    )
    try:
        yield inbox, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def webhook(answers: list[int]) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
    """A receiver answering each POST with the next status of ``answers`` (then 204)."""
    received: list[dict[str, Any]] = []

    async def take(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=answers.pop(0) if answers else 204)

    app = web.Application()
    app.router.add_post("/hook", take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield received, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """The mail server's TLS context and the CA file that trusts it."""
    folder = tmp_path_factory.mktemp("ca")
    ca = CertificateAuthority.load_or_create(folder)
    key, chain = ca.issue_server(["127.0.0.1"])
    (folder / "server.key").write_bytes(key)
    (folder / "server.crt").write_bytes(chain)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "server.crt", folder / "server.key")
    (folder / "trust.pem").write_bytes(ca.pem)
    return context, folder / "trust.pem"


def notice(email: str = "", hook: str = "", id: str = "tb-000000000001") -> Notice:
    return Notice(
        id,
        email,
        hook,
        "Test build tb-000000000001 of swarm-test/leaf-hello: succeeded",
        "swarm-test/leaf-hello-1 built on builder-0.\nLog: http://ctl/api/v1/test-build/tb-1/log\n",
        {"id": id, "state": "succeeded"},
    )


async def run(notifier: Notifier, body: Callable[[], Any]) -> None:
    await notifier.start()
    try:
        await body()
    finally:
        await notifier.stop()


class Outcomes:
    def __init__(self) -> None:
        self.done: dict[str, str] = {}
        self.changed = asyncio.Event()

    async def __call__(self, id: str, summary: str) -> None:
        self.done[id] = summary
        self.changed.set()

    async def wait(self, id: str) -> str:
        async with asyncio.timeout(10):
            while id not in self.done:
                self.changed.clear()
                await self.changed.wait()
        return self.done[id]


@pytest.mark.parametrize("mode", ["required", "auto"])
def test_email_goes_out_over_starttls_and_the_webhook_gets_its_post(
    tls: tuple[ssl.SSLContext, Path], mode: StartTls
) -> None:
    async def scenario() -> None:
        context, trust = tls
        outcomes = Outcomes()
        async with smtp_server(context, require=True) as (inbox, port), webhook([]) as (posts, url):
            smtp = SmtpSettings(f"smtp://127.0.0.1:{port}", "swarm@ctl.test", mode, trust)
            notifier = Notifier(smtp, outcomes, backoff=FAST)

            async def body() -> None:
                assert notifier.send(notice("user@example.org", url))
                assert await outcomes.wait("tb-000000000001") == "sent"

            await run(notifier, body)
            assert len(inbox.messages) == 1 and posts == [{"id": "tb-000000000001", "state": "succeeded"}]
            mail = inbox.messages[0]
            assert mail["To"] == "user@example.org" and mail["From"] == "swarm@ctl.test"
            assert "succeeded" in mail["Subject"]
            assert "/api/v1/test-build/tb-1/log" in mail.get_payload()
            # The server takes mail only after STARTTLS (require_starttls): it came encrypted.
            assert notifier.sent == 1

    asyncio.run(scenario())


def test_a_server_without_starttls_gets_no_mail_when_it_is_required_and_plain_mail_when_off(
    tls: tuple[ssl.SSLContext, Path],
) -> None:
    async def scenario() -> None:
        outcomes = Outcomes()
        async with smtp_server(None) as (inbox, port):
            url = f"smtp://127.0.0.1:{port}"
            required = Notifier(SmtpSettings(url, "swarm@ctl.test", "required"), outcomes, backoff=FAST)
            off = Notifier(SmtpSettings(url, "swarm@ctl.test", "off"), outcomes, backoff=FAST)

            async def refused() -> None:
                required.send(notice("user@example.org", id="tb-a"))
                assert "does not offer STARTTLS" in await outcomes.wait("tb-a")

            async def plain() -> None:
                off.send(notice("user@example.org", id="tb-b"))
                assert await outcomes.wait("tb-b") == "sent"

            await run(required, refused)
            assert inbox.messages == []  # permanent: tried once, nothing sent
            await run(off, plain)
            assert len(inbox.messages) == 1

    asyncio.run(scenario())


def test_a_failing_webhook_is_retried_until_it_takes_the_post_and_a_refusing_one_is_not() -> None:
    async def scenario() -> None:
        outcomes = Outcomes()
        async with webhook([503, 500]) as (posts, url), webhook([404]) as (refusals, gone):
            notifier = Notifier(None, outcomes, backoff=FAST)

            async def body() -> None:
                notifier.send(notice(hook=url, id="tb-retried"))
                notifier.send(notice(hook=gone, id="tb-refused"))
                assert await outcomes.wait("tb-retried") == "sent"
                assert await outcomes.wait("tb-refused") == "failed: webhook: HTTP 404"

            await run(notifier, body)
            # Sent once in the end: three tries, the last one taken.
            assert len(posts) == 3 and len(refusals) == 1

    asyncio.run(scenario())


def test_an_unreachable_mail_server_is_given_up_after_the_attempts_and_the_webhook_still_goes() -> None:
    async def scenario() -> None:
        outcomes = Outcomes()
        async with smtp_server(None) as (_inbox, port):
            pass  # closed: nobody listens there now
        async with webhook([]) as (posts, url):
            smtp = SmtpSettings(f"smtp://127.0.0.1:{port}", "swarm@ctl.test", "auto")
            notifier = Notifier(smtp, outcomes, backoff=FAST, attempts=3)

            async def body() -> None:
                notifier.send(notice("user@example.org", url, id="tb-x"))
                summary = await outcomes.wait("tb-x")
                assert summary.startswith("failed: email: ConnectionRefusedError")
                assert "(after 3 attempts)" in summary and summary.endswith("(webhook sent)")

            await run(notifier, body)
            assert len(posts) == 1

    asyncio.run(scenario())


def test_the_queue_is_bounded_and_send_never_waits() -> None:
    async def scenario() -> None:
        outcomes = Outcomes()
        notifier = Notifier(None, outcomes, queue_limit=2)
        # Not started: nothing takes from the queue.
        assert notifier.send(notice(id="tb-1")) and notifier.send(notice(id="tb-2"))
        assert not notifier.send(notice(id="tb-3"))
        assert notifier.queued == 2

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("url", "sender", "why"),
    [
        ("http://mail:25", "a@b", "smtp://HOST"),
        ("smtp://", "a@b", "smtp://HOST"),
        ("smtp://mail:99999", "a@b", "out of range"),
        ("smtp://mail/x", "a@b", "no path"),
        ("smtp://mail", "nobody", "email address"),
    ],
)
def test_bad_smtp_settings_are_refused_saying_why(url: str, sender: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        SmtpSettings(url, sender)
