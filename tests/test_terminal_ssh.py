"""Terminals and commands on a drone whose agent is down: the controller
runs the system ssh to the drone's ``ssh`` access setting, through the
private sshd on 127.0.0.1 (tests/support/sshd.py), with the healer's
identity and known_hosts. An aiohttp websocket client, swarm-cli and the
console in headless Chromium are the admin's side.

One controller serves the module: drone ``down`` has ssh access and its
agent killed (one test takes its access setting away for a while).
Healing is paused, so nothing brings the agent back meanwhile. Its drones
file gives a drone ``here`` ``ssh = "local"`` (only the file can).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from playwright.sync_api import BrowserContext, expect

from support.browser import WAIT_MS, Problems, log_in, shot
from support.cli import CLI_ENV, cli_args
from support.procs import Agent, enroll, wait_for
from support.shells import ShellDrone, start_shell_drone
from support.sshd import SshServer, free_port
from support.terminal import open_terminal

pytestmark = pytest.mark.timeout(120)


def assert_remote_shell_gone(sshd: SshServer) -> None:
    """Waits for the server's sessions to end; a failure names what is left
    (a side-by-side run once found something there after 15 s, unknown what)."""
    left: list[str] = []

    def gone() -> bool:
        left.clear()
        for proc in sshd.sessions():
            with contextlib.suppress(psutil.Error):
                left.append(f"{proc.pid} {proc.status()} {' '.join(proc.cmdline())[:200]}")
        return not left

    try:
        wait_for(gone, what="the remote shell gone")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; left: {'; '.join(left)}") from None


def admin(drone: ShellDrone, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return drone.controller.admin(method, path, None if body is None else json.dumps(body).encode())


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory, sshd: SshServer) -> Iterator[ShellDrone]:
    root = tmp_path_factory.mktemp("oob")
    drones_file = root / "drones.toml"
    drones_file.write_text('[drones.here]\nssh = "local"\n')
    drone = start_shell_drone(
        root,
        "down",
        "--ssh-identity",
        str(sshd.identity),
        "--ssh-known-hosts",
        str(sshd.known_hosts),
        "--drones-file",
        str(drones_file),
    )
    try:
        assert admin(drone, "POST", "/admin/api/healing", {"action": "pause"})[0] == 200
        status, body = admin(drone, "PUT", "/admin/api/drones/down", {"ssh": str(sshd.target)})
        assert status == 200, body
        drone.agent.kill()
        wait_for(
            lambda: (n := drone.controller.node("down")) and n["status"] == "offline", what="down offline"
        )
        yield drone
    finally:
        drone.stop()
        sshd.kill_sessions()


def ws_url(drone: ShellDrone, name: str, query: str) -> str:
    return drone.controller.admin_url.replace("http://", "ws://") + f"/ws/ssh/{name}?{query}"


def test_a_terminal_over_ssh_echoes_resizes_exits_and_is_recorded(down: ShellDrone, sshd: SshServer) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        url = ws_url(down, "down", "rows=24&cols=80&via=ssh")
        async with open_terminal(url, down.controller.admin_key) as term:
            session = term.session
            assert session["via"] == "ssh" and session["drone"] == "down"
            assert str(sshd.target) in session["note"]
            # Where the shell runs: a login through the test's sshd, not the agent.
            await term.run(
                "echo hi-$((6*7)) $SSH_CONNECTION", rf"hi-42 127\.0\.0\.1 \d+ 127\.0\.0\.1 {sshd.port}"
            )
            await term.ws.send_str(json.dumps({"type": "resize", "rows": 33, "cols": 111}))
            await term.run("stty size", r"\b33 111\r\n")
            await term.type("exit 3\r")
            exit = await term.message("exit")
            await term.closed()
            return session, exit

    session, exit = asyncio.run(scenario())
    assert exit["exit_code"] == 3 and exit["signal"] is None
    session_id = session["session"]

    def listed() -> dict[str, Any] | None:
        status, body = admin(down, "GET", "/admin/api/shells")
        assert status == 200, body
        found = [s for s in body["shells"] if s["id"] == session_id]
        return found[0] if found and found[0]["state"] == "closed" else None

    shell = wait_for(listed, what="the ssh session closed")
    assert shell["via"] == "ssh" and shell["exit"]["exit_code"] == 3 and shell["opened_by"] == "admin"
    opened = [e for e in down.controller.events(type="shell_opened") if e["data"]["session"] == session_id]
    closed = [e for e in down.controller.events(type="shell_closed") if e["data"]["session"] == session_id]
    assert opened and opened[0]["data"]["via"] == "ssh" and opened[0]["drone_name"] == "down"
    assert closed and closed[0]["data"]["exit_code"] == 3

    def cast() -> list[Any] | None:
        status, text = admin(down, "GET", f"/admin/api/shells/{session_id}/recording")
        assert status == 200, text
        lines = [json.loads(line) for line in text.splitlines()]
        return lines if any(line[1] == "o" and "exit" in line[2] for line in lines[1:]) else None

    lines = wait_for(cast, what="the recording written to its end")
    assert lines[0]["swarm"]["via"] == "ssh"
    output = "".join(f[2] for f in lines[1:] if f[1] == "o")
    assert "hi-42" in output and "33 111" in output
    assert ["r", "111x33"] in [f[1:] for f in lines[1:]]
    assert_remote_shell_gone(sshd)


def test_closing_the_session_hangs_up_ssh(down: ShellDrone, sshd: SshServer) -> None:
    """An admin's close (as at the idle or lifetime limit) ends ssh and the remote shell."""

    async def scenario() -> dict[str, Any]:
        async with open_terminal(ws_url(down, "down", "via=ssh"), down.controller.admin_key) as term:
            await term.run("echo up-$((2+3))", "up-5")
            assert sshd.sessions()
            await term.ws.send_str(json.dumps({"type": "close"}))
            exit = await term.message("exit")
            await term.closed()
            return exit

    exit = asyncio.run(scenario())
    assert exit["closed_by"] == "admin" and exit["message"] == "closed by admin"
    assert_remote_shell_gone(sshd)


def test_a_paused_viewer_stops_the_controller_reading_ssh(down: ShellDrone, tmp_path: Path) -> None:
    """Backpressure end to end: while the viewer is paused the controller
    reads no more of the PTY, so ssh, and with it the remote command, waits."""
    flag = tmp_path / "flood.done"  # the remote user is this machine's: it can touch it
    flood = 20_000_000

    def bytes_out(session_id: str) -> int:
        status, body = admin(down, "GET", "/admin/api/shells")
        assert status == 200, body
        return int(next(s for s in body["shells"] if s["id"] == session_id)["bytes_out"])

    def holds_still(session_id: str) -> int | None:
        first = bytes_out(session_id)
        time.sleep(0.5)
        second = bytes_out(session_id)
        return second if second == first and second > 0 else None

    async def scenario() -> None:
        async with open_terminal(ws_url(down, "down", "via=ssh"), down.controller.admin_key) as term:
            await term.run("echo before-$((2*4))", "before-8")
            session_id = term.session["session"]
            await term.ws.send_str('{"type": "pause"}')
            held_from = len(term.out)
            await term.type(f"head -c {flood} /dev/zero | tr '\\0' x; touch {flag}\r")
            read = await asyncio.to_thread(wait_for, lambda: holds_still(session_id), what="output held")
            assert read < flood // 2 and not flag.exists()
            assert bytes(term.out[held_from:]) == b""
            await term.ws.send_str('{"type": "resume"}')
            # Typed now, run after the flood: reading until its output reads the flood too.
            await term.run("echo after-$((3*3))", "after-9", timeout=60)
            assert flag.exists()
            assert bytes(term.out[held_from:]).count(b"x") >= flood
            await term.type("exit\r")
            await term.message("exit")

    asyncio.run(scenario())


def test_no_ssh_access_is_a_409_before_the_upgrade_and_local_runs_here(
    down: ShellDrone, sshd: SshServer, tmp_path: Path
) -> None:
    async def handshake(query: str) -> tuple[int, Any]:
        headers = {
            "X-Admin-Key": down.controller.admin_key,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        }
        url = f"{down.controller.admin_url}/ws/ssh/down?{query}"
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
            return response.status, await response.json()

    status, body = asyncio.run(handshake("via=telepathy"))
    assert status == 400 and "via must be agent or ssh" in body["error"]["message"]
    assert admin(down, "PUT", "/admin/api/drones/down", {"ssh": ""})[0] == 200
    try:
        status, body = asyncio.run(handshake("via=ssh"))
        assert status == 409 and body["error"]["message"].startswith(
            "no ssh access configured for drone down"
        )
        status, body = admin(down, "POST", "/admin/api/drones/down/exec", {"command": "true", "via": "ssh"})
        assert status == 409 and "no ssh access configured for drone down" in body["error"]["message"]
        ran = subprocess.run(
            cli_args(down.controller, "shell", "--via", "ssh", "down"),
            capture_output=True,
            text=True,
            timeout=60,
            env=CLI_ENV,
            stdin=subprocess.DEVNULL,
        )
        assert ran.returncode != 0 and "no ssh access configured for drone down" in ran.stderr, ran.stderr
        assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr

        # ssh itself failing (nothing listens there): its message on the screen, 255 and why.
        closed = free_port()
        assert admin(down, "PUT", "/admin/api/drones/down", {"ssh": f"127.0.0.1:{closed}"})[0] == 200

        async def refused() -> tuple[bytes, dict[str, Any]]:
            async with open_terminal(ws_url(down, "down", "via=ssh"), down.controller.admin_key) as term:
                exit = await term.message("exit")
                await term.closed()
                return bytes(term.out), exit

        out, exit = asyncio.run(refused())
        assert b"Connection refused" in out and exit["exit_code"] == 255, (out, exit)
        assert "ssh itself failed" in exit["reason"]

        # ssh = "local" (drones on the controller's own machine) runs here, and says
        # so; only the drones file gives it: an admin key is no shell on the controller.
        status, body = admin(down, "PUT", "/admin/api/drones/down", {"ssh": "local"})
        assert status == 400 and "only the drones file" in body["error"]["message"], body
        here = Agent(tmp_path, "here", down.controller.grpc_target)
        assert enroll(down.controller, "here", here.state_dir).returncode == 0
        here.start()
        try:

            def local_access() -> bool:
                drones = admin(down, "GET", "/admin/api/drones")[1]["drones"]
                return any(d["name"] == "here" and d["ssh_access"] == "local" for d in drones)

            wait_for(local_access, what="the drones file's access for here")
            status, body = admin(
                down, "POST", "/admin/api/drones/here/exec", {"command": "echo pid-$$; exit 5", "via": "ssh"}
            )
        finally:
            here.kill()
        assert status == 200, body
        assert body["via"] == "local" and body["exit_code"] == 5, body
        said = re.fullmatch(r"pid-(\d+)\n", body["stdout"])
        assert said is not None, body
        pid = int(said.group(1))
        assert pid != down.controller.pid and not os.path.exists(f"/proc/{pid}")
    finally:
        assert admin(down, "PUT", "/admin/api/drones/down", {"ssh": str(sshd.target)})[0] == 200


def test_exec_over_ssh_returns_output_status_and_its_timeout(down: ShellDrone, sshd: SshServer) -> None:
    status, body = admin(
        down,
        "POST",
        "/admin/api/drones/down/exec?via=ssh",
        {"command": "echo out-$((6*7)); echo err >&2; exit 4", "timeout": 20},
    )
    assert status == 200, body
    assert body["via"] == "ssh" and body["drone"] == "down"
    assert body["stdout"] == "out-42\n" and body["stderr"] == "err\n"
    assert body["exit_code"] == 4 and body["timed_out"] is False
    assert not body["stdout_truncated"] and not body["stderr_truncated"]
    # Through the agent the drone is unreachable, so this was ssh's doing.
    status, body = admin(down, "POST", "/admin/api/drones/down/exec", {"command": "true"})
    assert status == 409 and "via=ssh goes without the agent" in body["error"]["message"], body

    # The output cap (--exec-max-output-kb, 1 MiB by default) holds per stream; the command still ends.
    big = {"command": "head -c 1500000 /dev/zero | tr '\\0' o; echo done >&2", "via": "ssh"}
    status, body = admin(down, "POST", "/admin/api/drones/down/exec", big)
    assert status == 200, body
    assert body["stdout"] == "o" * (1 << 20) and body["stdout_truncated"] is True
    assert body["stderr"] == "done\n" and body["exit_code"] == 0

    status, body = admin(
        down, "POST", "/admin/api/drones/down/exec", {"command": "sleep 30", "timeout": 1, "via": "ssh"}
    )
    assert status == 200, body
    assert body["timed_out"] is True and body["exit_code"] is None and body["duration_s"] < 10
    audit = [e["data"] for e in down.controller.events(type="drone_exec") if e["data"].get("via") == "ssh"]
    assert {a["exit_code"] for a in audit} >= {4} and any(a["timed_out"] for a in audit)
    sshd.kill_sessions()  # ssh without a terminal leaves the remote sleep behind (documented)


def test_swarm_cli_shell_and_exec_via_ssh(down: ShellDrone, sshd: SshServer) -> None:
    ran = subprocess.run(
        cli_args(down.controller, "shell", "--via", "ssh", "down"),
        input=b"echo hi-$((6*7))\nexit 3\n",
        capture_output=True,
        timeout=60,
        env=CLI_ENV,
    )
    assert ran.returncode == 3, ran.stderr
    assert re.search(rb"[\r\n]hi-42\r\n", ran.stdout), ran.stdout
    said = ran.stderr.decode()
    assert f"through ssh {sshd.target}" in said and re.search(r"session \S+ on down", said), said
    ran_text = subprocess.run(
        cli_args(down.controller, "exec", "--via", "ssh", "down", "--", "echo", "cli-$((1+1));", "exit", "6"),
        capture_output=True,
        text=True,
        timeout=60,
        env=CLI_ENV,
        stdin=subprocess.DEVNULL,
    )
    assert ran_text.returncode == 6 and ran_text.stdout == "cli-2\n", (ran_text.stdout, ran_text.stderr)


def test_reattach_to_an_ssh_session_keeps_the_shell(down: ShellDrone) -> None:
    async def scenario() -> None:
        key = down.controller.admin_key
        async with open_terminal(ws_url(down, "down", "via=ssh"), key) as term:
            await term.run("MARK=kept-$((40+2)); echo set-$((1+1))", "set-2")
            session_id = term.session["session"]
        async with open_terminal(ws_url(down, "down", f"session={session_id}"), key) as again:
            assert again.session["reattached"] and again.session["via"] == "ssh"
            await again.run("echo $MARK", "kept-42")
            await again.type("exit\r")
            assert (await again.message("exit"))["exit_code"] == 0
            await again.closed()

    asyncio.run(scenario())


def test_the_console_offers_and_opens_an_ssh_terminal_for_an_offline_drone(
    down: ShellDrone, sshd: SshServer, browser: BrowserContext
) -> None:
    page = browser.new_page()
    problems = Problems(page)
    log_in(page, down.controller)
    page.click('nav a[data-page="drones"]')
    row = page.locator('tr[data-drone="down"]')
    expect(row).to_contain_text("offline", timeout=WAIT_MS)
    button = row.get_by_role("button", name="Terminal (SSH)")
    expect(button).to_be_enabled()
    # The Terminal page's list offers it too, over SSH only (no agent to go through),
    # beside the drones file's "here", whose shell is the controller host's own.
    page.click('nav a[data-page="terminal"]')
    expect(page.locator("#terminal-drone option")).to_have_text(
        ["down (via SSH, offline)", "here (local shell, offline)"], timeout=WAIT_MS
    )

    page.click('nav a[data-page="drones"]')
    button.click()
    expect(page.locator(".tab[data-state=live]")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator(".tab .tab-via")).to_have_text("ssh")
    rows = page.locator(".term-pane:not([hidden]) .xterm-rows")
    expect(rows).to_contain_text(f"[ssh {sshd.target} (not through the agent)]", timeout=WAIT_MS)
    # Typed at once: shown once (the remote terminal's echo only), and run.
    page.keyboard.type("echo web-$((6*7))")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text("web-42", timeout=WAIT_MS)
    assert rows.inner_text().count("echo web-$((6*7))") == 1, rows.inner_text()
    shot(page, "terminal-ssh")
    page.keyboard.type("exit 3")
    page.keyboard.press("Enter")
    status = page.locator(".term-pane:not([hidden]) .term-status")
    expect(status).to_contain_text("Shell exited with status 3", timeout=WAIT_MS)
    assert problems.unexpected() == []
