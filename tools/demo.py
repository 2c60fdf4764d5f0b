"""``make demo``: a local swarm on one machine.

Starts a controller on the default ports (bound to 127.0.0.1) and three
drones, each its own ``swarm-agent`` process with its name on the command
line, as on a real fleet. Everything lives under .demo/ in the checkout and
is reused by the next run. Ctrl-C stops it all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dronectl
import prefix

ROOT = Path(__file__).resolve().parent.parent
EMERGE_FLAGS = "--oneshot --buildpkg --usepkg --getbinpkg --quiet-build=n"
DEMO_ATOMS = [
    "swarm-test/diamond-top",
    "swarm-test/chain-d",
    "swarm-test/leaf-hello",
    "swarm-test/leaf-script",
    "swarm-test/leaf-data",
    "swarm-test/sleeper",
]
DRONES = [("drone-io", "lxc"), ("drone-europa", "qemu"), ("drone-titan", "bare-metal")]


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        # Own session: Ctrl-C reaches only us, and we stop the controller before the drones.
        return subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def fetch(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=2) as response:
        data: dict[str, object] = json.load(response)
        return data


def create_token(admin: str, key: str, name: str) -> str:
    request = urllib.request.Request(
        f"{admin}/admin/api/tokens",
        method="POST",
        data=json.dumps({"name": name, "ttl": 600}).encode(),
        headers={"X-Admin-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(json.load(response)["token"])


def queue_session(admin: str, key: str) -> str:
    request = urllib.request.Request(
        f"{admin}/admin/api/queue",
        method="POST",
        data=json.dumps({"atoms": DEMO_ATOMS, "session": "demo"}).encode(),
        headers={"X-Admin-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        reply = json.load(response)
    return f"{reply['session']['name']}: {reply['session']['total']} packages"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and once it has exited, wait for it; its whole process group
    (spawn() gave it one) is killed if it is still there after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def reap() -> None:
    """Wait for the children that have ended (the agents dronectl.start
    started from here, stopped by dronectl.stop, which does not wait)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--state", type=Path, default=ROOT / ".demo", help="demo state directory (default: .demo)"
    )
    parser.add_argument("--grpc-port", type=int, default=8094, help="gRPC port (default: 8094)")
    parser.add_argument("--public-port", type=int, default=8100, help="public HTTP port (default: 8100)")
    parser.add_argument("--admin-port", type=int, default=8093, help="admin HTTP port (default: 8093)")
    parser.add_argument("--enroll-port", type=int, default=8095, help="enrollment port (default: 8095)")
    ns = parser.parse_args()
    state: Path = ns.state.resolve()
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ready = state / "controller.ready.json"
    ready.unlink(missing_ok=True)
    bindir = Path(sys.executable).parent

    # The drones' agents are managed the way OpenRC manages one on a real
    # drone, by tools/dronectl.py; the healer restarts them with it, on this
    # machine ("local" instead of an SSH target).
    services = state / "drones"
    ctl = f"{sys.executable} {ROOT / 'tools' / 'dronectl.py'} --state {services}"
    drones_file = state / "drones.toml"
    drones_file.write_text(
        "# Written by tools/demo.py: out-of-band access for the demo's drones.\n"
        + "".join(
            f'[drones.{name}]\nssh = "local"\n'
            + (f'host = "local"\nreboot = "{ctl} restart {{name}}"\n' if kind in ("lxc", "qemu") else "")
            for name, kind in DRONES
        )
    )
    controller_args = [
        str(bindir / "swarm-controller"),
        "--data-dir",
        str(state / "controller"),
        "--bind",
        "127.0.0.1",
        "--admin-bind",
        "127.0.0.1",
        "--grpc-port",
        str(ns.grpc_port),
        "--public-port",
        str(ns.public_port),
        "--admin-port",
        str(ns.admin_port),
        "--enroll-port",
        str(ns.enroll_port),
        "--ready-file",
        str(ready),
        "--log-file",
        str(logs / "controller.log"),
        "--drones-file",
        str(drones_file),
        "--restart-command",
        f"{ctl} restart {{name}}",
        "--hard-restart-command",
        f"{ctl} hard-restart {{name}}",
    ]
    # A Gentoo prefix whose Portage configuration (the bundled test overlay)
    # defines what the swarm builds; its PKGDIR is the staging binhost.
    ctl_prefix = prefix.create_prefix(
        prefix.PrefixConfig(state / "prefixes" / "controller", prefix.Role.CONTROLLER)
    )
    controller_args += ["--portage-eprefix", str(ctl_prefix.root)]
    controller = spawn(controller_args, logs / "controller.out")
    interrupted = False

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # Also when started in the background of a script, where SIGINT comes ignored.
    signal.signal(signal.SIGINT, on_signal)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if controller.poll() is not None:
                tail = (logs / "controller.out").read_text(errors="replace").strip().splitlines()[-1:]
                print(
                    f"demo: the controller exited: {tail[0] if tail else 'see ' + str(logs)}", file=sys.stderr
                )
                return 1
            if time.monotonic() > deadline:
                print(
                    f"demo: the controller did not come up in 20 s; see {logs}/controller.out",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        public = f"http://127.0.0.1:{info['public_port']}"
        admin = f"http://127.0.0.1:{info['admin_port']}"

        key = Path(info["admin_key_file"]).read_text().strip()
        commands = {}
        for name, kind in DRONES:
            drone_state = state / "drones" / name
            if not (drone_state / "drone.crt").exists():
                # Enrol the way an admin would: a one-time token, then `swarm-agent enroll`.
                token = create_token(admin, key, name)
                subprocess.run(
                    [
                        str(bindir / "swarm-agent"),
                        "enroll",
                        "--name",
                        name,
                        "--controller",
                        f"127.0.0.1:{info['grpc_port']}",
                        "--enroll-address",
                        f"127.0.0.1:{info['enroll_port']}",
                        "--token",
                        token,
                        "--ca-pin",
                        info["ca_pin"],
                        "--state-dir",
                        str(drone_state),
                        "--log-level",
                        "warning",
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            drone_prefix = prefix.create_prefix(
                prefix.PrefixConfig(
                    state / "prefixes" / name,
                    prefix.Role.DRONE,
                    binhost=info["staging_url"],
                    package_env={"swarm-test/sleeper": {"SWARM_TEST_SLEEP": "5"}},
                )
            )
            args = [
                str(bindir / "swarm-agent"),
                "--name",
                name,
                "--drone-type",
                kind,
                "--portage-eprefix",
                str(drone_prefix.root),
                "--pkgdir",
                str(drone_prefix.pkgdir),
                "--emerge-command",
                f"{sys.executable} {bindir / 'emerge'} {EMERGE_FLAGS}",
                "--min-free-disk-mb",
                "64",
                "--controller",
                f"127.0.0.1:{info['grpc_port']}",
                "--state-dir",
                str(state / "drones" / name),
                "--cache-path",
                str(state / "drones" / name),
                "--log-file",
                str(logs / f"{name}.log"),
                # Three drones on one machine: one pid file each (agent.pid there is dronectl's).
                "--pid-file",
                str(state / "drones" / name / "swarm-agent.pid"),
            ]
            dronectl.write_spec(services, name, args)
            commands[name] = f"{ctl} start {name}"
            print(f"{name}: {dronectl.start(services / name)}", flush=True)

        deadline = time.monotonic() + 20
        while True:
            nodes = fetch(f"{public}/api/v1/nodes")["nodes"]
            up = {n["name"] for n in nodes if n["status"] == "online"}  # type: ignore[attr-defined,index]
            if up >= {name for name, _ in DRONES}:
                break
            if time.monotonic() > deadline:
                print(f"demo: drones not online after 20 s: see {logs}", file=sys.stderr)
                return 1
            time.sleep(0.2)

        session = queue_session(admin, key)
        key_header = f'-H "X-Admin-Key: $(cat {info["admin_key_file"]})"'
        cli = f"{bindir}/swarm-cli --url {admin} --key-file {info['admin_key_file']}"
        print(
            f"""
Build Swarm demo is running: a controller and {len(DRONES)} drones ({", ".join(n for n, _ in DRONES)}),
enrolled with join tokens and talking mutual TLS (CA pin {info["ca_pin"]}).

  Admin console  {admin}/   (log in with the key in {info["admin_key_file"]})
  Status page    {public}/   (public, read-only)
  Public API     {public}/api/v1/nodes      (also /status, /events, /activity, /openapi.json)
  Admin API      {admin}/admin/api/whoami   (header X-Admin-Key: the same key)
  State and logs {state}

A build session is queued ({session}): the drones build the bundled test
overlay with real emerge into the staging binhost at {info["staging_url"]}/

Try:
  curl -s {public}/api/v1/nodes | python3 -m json.tool
  curl -s {public}/api/v1/status | python3 -m json.tool      # session progress
  curl -s {public}/api/v1/queue | python3 -m json.tool       # jobs moving queued -> building -> done
  curl -s {public}/api/v1/history | python3 -m json.tool
  {cli} drones
  {cli} shell drone-io                  # a root terminal on the drone (exit ends it)
  {cli} logs drone-io --follow          # the drone's agent log, live
  {cli} protocol --follow --sample 5    # the control-stream messages, live
  {cli} token create --ttl 1h
  {cli} release cut --notes "first release"   # once the session is complete: a signed release
  {cli} release promote vYYYY.MM.DD     # what {public}/binhost/current/ serves
  kill -9 $(pgrep -f 'swarm-agent --name drone-io')     # offline at once; the healer restarts it
  curl -s {key_header} {admin}/admin/api/drones/drone-io/health | python3 -m json.tool
  curl -s {public}/api/v1/health | python3 -m json.tool      # availability, mean time to recovery
  {commands["drone-io"]}     # starts it by hand (the healer does it after a few seconds)

Ctrl-C stops everything.""",
            flush=True,
        )
        while controller.poll() is None:
            time.sleep(0.5)
        print(
            f"demo: the controller exited with {controller.returncode}; see {logs}/controller.log",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        interrupted = True
        print("\nstopping the controller and drones...", flush=True)
        return 0
    finally:
        # The controller first: its healer restarts a drone that stays dark for
        # a few seconds (with dronectl, in a session of the drone's own), so a
        # drone stopped while the controller still runs can be started again
        # behind our back and outlive the demo (on a loaded machine, stopping
        # the first drones can take longer than the heal grace).
        stop(controller)
        for name, _ in DRONES:
            if (services / name / "agent.json").exists():
                dronectl.stop(services / name, timeout=15)
        reap()
        # Nothing serves on those ports any more: a stale file would send the next reader there.
        ready.unlink(missing_ok=True)
        if interrupted:
            print("stopped.")


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
