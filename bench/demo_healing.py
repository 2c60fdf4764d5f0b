"""Healing in a fresh demo: what a newcomer sees who kills a drone's agent
right after ``make demo`` starts, and again a minute later. It prints
figures; it is not a test and asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/demo_healing.py                 # kills at +10 s and +70 s: about 2 minutes
    .venv/bin/python bench/demo_healing.py --kills 10,15,20,25,30   # a crash loop: the cool-off grows
    .venv/bin/python bench/demo_healing.py --second-start  # the demo's second start: drones known
    .venv/bin/python bench/demo_healing.py --checkout ../other-tree  # another checkout's demo (its .venv)

tools/demo.py runs as ``make demo`` runs it (controller, three drones under
tools/dronectl.py, a build session), but with a fresh state directory in a
temporary folder and free ports, so it never meets a demo on the default
ports (with ``--second-start`` it is started, stopped once every drone is
online, and started again on the same state: the controller knows the
drones then, and its startup grace lasts until they are back). At each
offset of ``--kills`` (seconds after the demo was started;
later if the drone is not online yet) the bench SIGKILLs the drone's agent
and polls the public API until the drone is online again with a new agent
process. Figures per kill: when it happened, when the controller saw the
drone offline, when it was back, and the controller's own incident (its
recovery time and the steps the healer took) and the cool-off the drone's
health view showed. Then Ctrl-C for the demo (SIGINT), and a check that
none of its processes is left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from harness import ROOT, Api, BenchError, Children, env_info, own_pid_group, say, wait_until

from swarm.clock import parse_iso

TARGET_BACK_S = 15.0  # the issue: an agent killed 10 s after start is back within 15 s


@dataclass(frozen=True, slots=True)
class Options:
    checkout: Path
    drone: str
    kills: tuple[float, ...]
    second_start: bool
    timeout: float
    keep: bool
    json_path: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/demo_healing.py",
        description="Healing in a fresh demo: runs tools/demo.py with a new state directory "
        "and free ports, SIGKILLs one drone's agent at given offsets after the start, and "
        "prints how long until it is online again (and the controller's incident for it). "
        "Prints figures; asserts nothing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        default=ROOT,
        help="the checkout whose tools/demo.py runs, with the python of its .venv",
    )
    parser.add_argument("--drone", default="drone-io", help="the demo drone whose agent is killed")
    parser.add_argument(
        "--kills",
        default="10,70",
        help="comma-separated seconds after the demo's start at which the agent is killed "
        "(a kill waits until the drone is online, so a later one may slip)",
    )
    parser.add_argument(
        "--second-start",
        action="store_true",
        help="start the demo, stop it once every drone is online, and measure on its second start "
        "(drones known to the controller from the first)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds a killed agent may take to be back before the bench gives up",
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo's state directory (logs)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON here")
    ns = parser.parse_args(argv)
    try:
        kills = tuple(sorted(float(x) for x in ns.kills.split(",") if x.strip()))
    except ValueError:
        parser.error(f"--kills must be comma-separated seconds, got {ns.kills!r}")
    if not kills or kills[0] < 0:
        parser.error("--kills needs at least one offset, none negative")
    checkout = ns.checkout.resolve()
    for needed in (checkout / "tools" / "demo.py", checkout / ".venv" / "bin" / "python"):
        if not needed.exists():
            parser.error(f"--checkout {checkout}: no {needed.relative_to(checkout)} (run make venv there)")
    return Options(checkout, ns.drone, kills, ns.second_start, ns.timeout, ns.keep, ns.json)


def free_ports(count: int) -> list[int]:
    """Ports the kernel has free now (bound together, so distinct)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


class Demo:
    def __init__(self, opts: Options, children: Children, state: Path) -> None:
        self.opts = opts
        self.children = children
        self.state = state
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.public: Api | None = None
        self.admin: Api | None = None

    def start(self) -> None:
        grpc, public, admin, enroll = free_ports(4)
        python = str(self.opts.checkout / ".venv" / "bin" / "python")
        argv = [python, str(self.opts.checkout / "tools" / "demo.py"), "--state", str(self.state)]
        argv += ["--grpc-port", str(grpc), "--public-port", str(public)]
        argv += ["--admin-port", str(admin), "--enroll-port", str(enroll)]
        ready = self.state / "controller.ready.json"
        ready.unlink(missing_ok=True)  # from a first start
        say(f"starting the demo: {' '.join(argv[1:])}")
        self.started_at = time.time()
        self.proc = self.children.spawn(argv, log=self.state.parent / "demo.out")
        text = wait_until("its controller", lambda: ready.exists() and ready.read_text(), 60, self.alive)
        info = json.loads(text)
        self.public = Api(int(info["public_port"]))
        self.admin = Api(int(info["admin_port"]), admin_key=Path(info["admin_key_file"]).read_text().strip())

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = (self.state.parent / "demo.out").read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"the demo exited with {self.proc.returncode}: {' | '.join(tail)}")

    def since_start(self, at: float) -> float:
        return at - self.started_at

    def node(self, name: str) -> dict[str, Any] | None:
        assert self.public is not None
        return self.public.node(name)

    def health(self, name: str) -> dict[str, Any]:
        assert self.admin is not None
        status, body = self.admin.get(f"/admin/api/drones/{name}/health")
        if status != 200:
            raise BenchError(f"GET /admin/api/drones/{name}/health answered {status}: {body}")
        return dict(body)

    def agent_pid(self, name: str) -> int:
        """The drone's agent, from tools/dronectl.py's pid file; checked against its command line."""
        pid, _started = json.loads((self.state / "drones" / name / "agent.pid").read_text())
        cmdline = psutil.Process(pid).cmdline()
        if "--name" not in cmdline or cmdline[cmdline.index("--name") + 1] != name:
            raise BenchError(f"pid {pid} of {name}'s pid file is not its agent: {' '.join(cmdline)}")
        return int(pid)

    def stop(self) -> list[str]:
        """Ctrl-C, as a person stops it; the processes of the demo still running after it."""
        if self.public is not None:
            self.public.close()
        if self.admin is not None:
            self.admin.close()
        if self.proc is None:
            return []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                say("the demo did not stop within 60 s of SIGINT")
        self.children.stop(self.proc)
        left = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(str(self.state) in part for part in proc.info["cmdline"] or []):
                    left.append(f"{proc.pid} {' '.join(proc.info['cmdline'])[:120]}")
                    proc.kill()
        return left


def all_online(demo: Demo) -> bool:
    assert demo.public is not None
    status, body = demo.public.get("/api/v1/nodes")
    nodes = body["nodes"] if status == 200 else []
    return len(nodes) >= 3 and all(n["status"] == "online" for n in nodes)


def kill_and_watch(demo: Demo, opts: Options, offset: float) -> dict[str, Any]:
    name = opts.drone
    at = demo.started_at + offset
    online = wait_until(
        f"{name} online", lambda: (n := demo.node(name)) and n["status"] == "online" and n, 600, demo.alive
    )
    online_seen = time.time()
    while time.time() < at:
        demo.alive()
        time.sleep(min(0.05, max(0.0, at - time.time())))
    online = demo.node(name) or online
    if online["status"] != "online":
        online = wait_until(
            f"{name} online",
            lambda: (n := demo.node(name)) and n["status"] == "online" and n,
            600,
            demo.alive,
        )
    before = online["instance_id"]
    cooloff = demo.health(name).get("cooloff")  # None from a controller before the backoff
    pid = demo.agent_pid(name)
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    say(f"{name}: SIGKILL to its agent (pid {pid}) at +{demo.since_start(killed):.1f}s")
    offline = wait_until(
        f"{name} offline",
        lambda: (n := demo.node(name)) and n["status"] != "online" and time.time(),
        30,
        demo.alive,
    )
    back = wait_until(
        f"{name} back online with a new agent",
        lambda: (
            (n := demo.node(name)) and n["status"] == "online" and n["instance_id"] != before and time.time()
        ),
        opts.timeout,
        demo.alive,
    )
    say(f"{name}: back online {back - killed:.1f}s after the kill")

    def closed() -> dict[str, Any] | None:
        incidents = demo.health(name)["incidents"]
        latest = incidents[0] if incidents else None
        if latest is None or parse_iso(latest["failed_at"]) < killed - 1:
            return None
        return latest if latest["recovered_at"] else None

    incident = wait_until(f"{name}'s incident closed", closed, 30, demo.alive)
    health = demo.health(name)
    steps = [
        e["message"].split(": ", 2)[1]
        for e in health["events"]
        if e["type"] == "heal_action" and float(e["ts"]) >= killed
    ]
    return {
        "kill_at_s": round(demo.since_start(killed), 2),
        "online_since_s": round(demo.since_start(online_seen), 2),
        "offline_seen_s": round(offline - killed, 3),
        "back_s": round(back - killed, 2),
        "incident_recovery_s": incident["recovery_s"],
        "outcome": incident["outcome"],
        "steps": steps,
        "cooloff_before": cooloff,
    }


def report(opts: Options, results: dict[str, Any]) -> str:
    lines = [
        f"Healing in a fresh demo ({results['checkout']}): {opts.drone}'s agent SIGKILLed at each "
        f"offset of --kills {','.join(f'{k:g}' for k in opts.kills)} s after the demo started. "
        f"{results['env']['cpus']} CPUs, Python {results['env']['python']}."
        + (" The demo's second start (its drones known to the controller)." if opts.second_start else ""),
        f"Drones online after the start: {opts.drone} at +{results['first_online_s']:.1f}s.",
        "",
        "kill at    offline seen   back online   incident recovery   healed by       "
        "cool-off before the kill",
    ]
    for k in results["kills"]:
        c = k["cooloff_before"]
        wait = "-" if c is None else f"{c['current_s']:g}s" if c["incidents_in_a_row"] else "none"
        if c and c.get("until"):
            wait += f" (until +{parse_iso(c['until']) - results['started_at']:.1f}s)"
        steps = ", ".join(k["steps"]) or "itself"
        lines.append(
            f"+{k['kill_at_s']:6.1f}s   {k['offline_seen_s']:8.3f}s    {k['back_s']:8.2f}s     "
            f"{k['incident_recovery_s']:8.2f}s        {steps:15} {wait}"
        )
    first = results["kills"][0]
    verdict = "met" if first["back_s"] <= TARGET_BACK_S else "MISSED"
    lines += [
        "",
        f"Target (the issue): killed ~10 s after the start, back within {TARGET_BACK_S:g} s: {verdict} "
        f"(killed at +{first['kill_at_s']:.1f}s, back in {first['back_s']:.2f}s).",
        "back online = until the public API shows the drone online with a new agent process; incident "
        "recovery = the controller's recovered_at - failed_at (a pong from the new agent).",
        f"Demo stopped with SIGINT; processes left behind: {len(results['left_behind']) or 'none'}"
        + (
            f" (after the first start: {len(results['left_behind_first']) or 'none'})."
            if "left_behind_first" in results
            else "."
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    own_pid_group()
    if opts.checkout != ROOT:
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # leave nothing behind in the other checkout
    work = Path(tempfile.mkdtemp(prefix="swarm-demo-healing-"))
    # tools/demo.py of some checkouts writes into its state directory before creating it.
    state = work / "demo"
    state.mkdir()
    children = Children()
    demo = Demo(opts, children, state)
    failed = False
    results: dict[str, Any] = {"checkout": str(opts.checkout), "env": env_info(), "kills": []}
    try:
        if opts.second_start:
            demo.start()
            wait_until("every drone online", lambda: all_online(demo), 600, demo.alive)
            say("every drone online: stopping the demo for its second start")
            results["left_behind_first"] = demo.stop()
            demo = Demo(opts, children, state)
        demo.start()
        results["started_at"] = demo.started_at
        online = wait_until(
            f"{opts.drone} online",
            lambda: (n := demo.node(opts.drone)) and n["status"] == "online" and time.time(),
            600,
            demo.alive,
        )
        results["first_online_s"] = round(demo.since_start(online), 2)
        for offset in opts.kills:
            results["kills"].append(kill_and_watch(demo, opts, offset))
    except BenchError as exc:
        failed = True
        print(f"bench/demo_healing.py: {exc} (state and logs kept in {work})", file=sys.stderr)
    except KeyboardInterrupt:
        failed = True
        print("bench/demo_healing.py: interrupted", file=sys.stderr)
    finally:
        results["left_behind"] = demo.stop()
        children.close()
    if results["kills"]:
        print(report(opts, results))
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(results, indent=2) + "\n")
    if opts.keep or failed:
        say(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
