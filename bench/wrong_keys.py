"""What wrong admin keys cost the controller: CPU seconds for N wrong keys
from M client addresses, next to N requests with the right key. It prints
figures; it is not a test and asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/wrong_keys.py                   # 1,000 wrong keys from 100 addresses
    .venv/bin/python bench/wrong_keys.py --unlimited       # every wrong key checked, logged and an event
    .venv/bin/python bench/wrong_keys.py --legacy          # with a key still in the old scrypt form
    .venv/bin/python bench/wrong_keys.py --keys 5000 --addresses 250 --keep

One controller on 127.0.0.1 (``--insecure``: no CA to make), its admin
tier asked ``GET /admin/api/whoami`` over one keep-alive connection per
client address (127.0.0.2, 127.0.0.3, ...), the addresses taking turns.
The controller's CPU time (user + system, from /proc) is read before and
after each phase: the wrong keys, then as many requests with the right
key (what any request costs: HTTP, routing, JSON), then one right key
from every address that sent wrong ones (the right key must still work).

``--unlimited`` raises the wrong-key allowances so that every wrong key is
checked, logged and written as an event (the limiter's work is then all
the work there is); by default most of them get 429 once the shared
allowance (100 a minute) is spent. ``--legacy`` adds a key in the scrypt
form of earlier versions, so that each checked wrong key also pays
scrypt: the shared allowance is what bounds that.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness import HOST, BenchError, Children, Controller, CpuMeter


def legacy_line(name: str) -> str:
    """A keys-file line as earlier versions wrote it (scrypt, N=2^14), for a random key."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secrets.token_bytes(32), salt=salt, n=2**14, r=8, p=1, maxmem=64 * 2**20, dklen=32
    )
    b64 = [base64.urlsafe_b64encode(x).rstrip(b"=").decode() for x in (salt, digest)]
    return f"{name}:scrypt$16384$8$1${b64[0]}${b64[1]}\n"


class Clients:
    """One keep-alive connection to the admin tier per source address."""

    def __init__(self, port: int, addresses: int) -> None:
        self.port = port
        self.sources = [f"127.0.{i // 250}.{i % 250 + 2}" for i in range(addresses)]
        self._conns: dict[str, http.client.HTTPConnection] = {}

    def whoami(self, source: str, key: str) -> int:
        for attempt in range(2):
            conn = self._conns.get(source)
            if conn is None:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=10, source_address=(source, 0))
                self._conns[source] = conn
            try:
                conn.request("GET", "/admin/api/whoami", headers={"X-Admin-Key": key})
                response = conn.getresponse()
                response.read()
                return response.status
            except (OSError, http.client.HTTPException):
                self.close(source)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self, source: str | None = None) -> None:
        for name in [source] if source else list(self._conns):
            conn = self._conns.pop(name, None)
            if conn is not None:
                conn.close()


def phase(ctl: Controller, clients: Clients, keys: list[str]) -> tuple[Counter[int], float, float]:
    """Send each key from the next address in turn: (statuses, controller CPU s, wall s)."""
    meter = CpuMeter([ctl.pid])
    started = time.monotonic()
    statuses: Counter[int] = Counter()
    for i, key in enumerate(keys):
        statuses[clients.whoami(clients.sources[i % len(clients.sources)], key)] += 1
    return statuses, meter.seconds(), time.monotonic() - started


def in_process(count: int, addresses: int, root: Path) -> tuple[float, Counter[int]]:
    """CPU seconds of ``count`` wrong-key checks by the admin tier's own
    code (AdminAuth.check_key), with every allowance raised so that each
    is checked and reported (the event included; the log line not, as it
    would go to this terminal). No HTTP: what the check itself costs."""
    import asyncio
    import logging

    from aiohttp import web

    from swarm.controller import adminkey
    from swarm.controller.errors import Unauthenticated
    from swarm.controller.events import EventLog
    from swarm.controller.store.runner import StoreRunner
    from swarm.controller.store.sql import SqlStore
    from swarm.controller.web.auth import AdminAuth, AuthSettings
    from swarm.controller.web.hosts import HostPolicy

    logging.getLogger("swarm.controller.web.auth").setLevel(logging.ERROR)
    keys = [adminkey.StoredKey("admin", adminkey.hash_key(adminkey.new_key()))]
    store = adminkey.KeyStore(root / "in-process-keys", root / "in-process.key", keys)
    events = EventLog(StoreRunner(SqlStore(f"sqlite:///{root}/in-process.db")), buffer=1000, retention=1000)
    settings = AuthSettings(60.0, 600.0, 10, failures=10**9, global_failures=10**9, failure_window=60.0)
    auth = AdminAuth(store, settings, events, HostPolicy(frozenset(), frozenset()))
    wrong = [secrets.token_urlsafe(32) for _ in range(count)]

    async def run() -> tuple[float, Counter[int]]:
        statuses: Counter[int] = Counter()
        started = time.process_time()
        for i, key in enumerate(wrong):
            try:
                await auth.check_key(
                    f"10.0.{i % addresses // 250}.{i % addresses % 250}", key, "header", "no"
                )
                statuses[200] += 1
            except Unauthenticated:
                statuses[401] += 1
            except web.HTTPTooManyRequests:
                statuses[429] += 1
        return time.process_time() - started, statuses

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1000, help="wrong keys to send (default 1000)")
    parser.add_argument(
        "--addresses", type=int, default=100, help="client addresses they come from (default 100)"
    )
    parser.add_argument(
        "--unlimited", action="store_true", help="raise the allowances: every wrong key is checked"
    )
    parser.add_argument("--legacy", action="store_true", help="add a key in the old scrypt form")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (controller log)")
    ns = parser.parse_args()
    if not 1 <= ns.addresses <= 10_000 or ns.keys < 1:
        parser.error("--addresses must be 1-10000 and --keys at least 1")

    root = Path(tempfile.mkdtemp(prefix="bench-wrong-keys-"))
    children = Children()
    extra = ["--admin-bind", HOST]
    if ns.unlimited:
        extra += ["--admin-auth-failures", "1000000", "--admin-auth-global-failures", "1000000"]
    try:
        data_dir = root / "controller"
        data_dir.mkdir()
        if ns.legacy:
            (data_dir / "admin-keys").write_text(legacy_line("old"))
            (data_dir / "admin.key").write_text(secrets.token_urlsafe(32) + "\n")
        ctl = Controller(children, data_dir, ping_interval=5.0, extra=extra)
        ports = ctl.start()
        right = ctl.admin_key
        clients = Clients(ports.admin, ns.addresses)
        for source in clients.sources:  # connections open before anything is measured
            clients.whoami(source, right)

        wrong, wrong_cpu, wrong_wall = phase(
            ctl, clients, [secrets.token_urlsafe(32) for _ in range(ns.keys)]
        )
        good, good_cpu, good_wall = phase(ctl, clients, [right] * ns.keys)
        after, _, _ = phase(ctl, clients, [right] * len(clients.sources))
        clients.close()

        print(f"controller on 127.0.0.1:{ports.admin}, {ns.keys} keys from {ns.addresses} addresses")
        limits = (
            "raised (--unlimited)" if ns.unlimited else "defaults (10 per address, 100 in all, per minute)"
        )
        print(f"  allowances: {limits}")
        print(f"  legacy scrypt key present: {'yes' if ns.legacy else 'no'}")
        print()
        print(f"{'phase':<28} {'answers':<22} {'CPU s':>8} {'CPU ms/req':>11} {'wall s':>8}")
        for name, statuses, cpu, wall, count in (
            ("wrong keys", wrong, wrong_cpu, wrong_wall, ns.keys),
            ("right key (baseline)", good, good_cpu, good_wall, ns.keys),
        ):
            answers = ", ".join(f"{n}x {code}" for code, n in sorted(statuses.items()))
            print(f"{name:<28} {answers:<22} {cpu:>8.3f} {1000 * cpu / count:>11.3f} {wall:>8.2f}")
        print()
        print(f"wrong keys beyond a right key's cost: {wrong_cpu - good_cpu:+.3f} CPU s for {ns.keys}")
        cpu, checked = in_process(ns.keys, ns.addresses, root)
        answers = ", ".join(f"{n}x {code}" for code, n in sorted(checked.items()))
        print(f"the check alone, in process ({answers}): {1000 * cpu:.1f} ms CPU for {ns.keys}")
        locked_out = sum(n for code, n in after.items() if code != 200)
        print(f"right key afterwards from each of the {len(clients.sources)} addresses: ", end="")
        print("all 200" if not locked_out else f"{locked_out} refused: {dict(after)}")
        return 0 if not locked_out else 1
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        children.close()
        if ns.keep:
            print(f"kept {root}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(root)


if __name__ == "__main__":
    sys.exit(main())
