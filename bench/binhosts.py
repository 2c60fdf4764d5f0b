"""Binhosts benchmark: publishing releases to mirrors over rsync + SSH,
then (bench/binhosts_serving.py) the controller's own binhost beside
nginx. It prints figures; it asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/binhosts.py                    # 1, 2 and 4 mirrors, then serving
    .venv/bin/python bench/binhosts.py --mirrors 1,2 --packages 200 --no-serving
    .venv/bin/python bench/binhosts.py --json figures.json --keep

One real controller process (builds on: a controller prefix from
tools/prefix.py) whose staging holds ``--packages`` (default 1,000) small
real gpkgs written by Portage's own gpkg code (tools/gpkgs.py, the least
metadata: some 10 KB each, 10 MB a release; modest on purpose, the
figures that matter are what travels and how long a round trip of
commands takes). Release 1 is cut from them; then ``--changed`` per cent
(default 5) are rebuilt as version 2 and release 2 is cut.

For each mirror count N in ``--mirrors`` (default 1, 2 and 4): N fresh
mirrors, each a real sshd on 127.0.0.1 with its own directory and a static
HTTP server for it (tests/support/mirror.py), are added as binhost
targets (``PUT /admin/api/binhosts/{name}``) while release 1 is current:
the controller pushes it to all of them at once (``--mirror-parallel``
4). Then release 2 is promoted. For each push: seconds until every mirror
serves it (the bench polls each mirror's ``current/manifest.json`` over
HTTP from the moment of the PUT or promote), and per mirror rsync's bytes
sent and the push's seconds (from the controller's binhost_synced
events). Target: the second push sends under 10 % of the first's bytes.

Last, unless ``--no-serving``, bench/binhosts_serving.py's ``run()`` with
``--serving`` arguments (when this checkout has it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import PYTHON, ROOT, Api, BenchError, Children, Controller, env_info, own_pid_group, say

sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))
import prefix as prefixes  # tools/prefix.py

from support.mirror import Mirror, mirrors  # tests/support/mirror.py

TARGET_SHARE = 0.10
SERVE_TIMEOUT = 900.0


@dataclass(frozen=True, slots=True)
class Options:
    mirrors: tuple[int, ...]
    packages: int
    changed: float
    serving: tuple[str, ...] | None
    keep: bool
    json_path: Path | None


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2,4, got {text!r}") from None
    if not counts or any(c < 1 or c > 26 for c in counts):
        raise argparse.ArgumentTypeError("mirror counts are 1 to 26")
    return counts


def make_gpkgs(prefix: prefixes.Prefix, count: int, version: str) -> None:
    result = subprocess.run(
        [PYTHON, str(ROOT / "tools" / "gpkgs.py"), "--inject", "--count", str(count), "--version", version],
        env=prefix.env(),
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"tools/gpkgs.py failed: {result.stderr[-2000:]}")


def call(api: Api, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    status, reply = api.request(method, path, body)
    if status >= 300:
        raise BenchError(f"{method} {path} answered {status}: {reply}")
    return reply


def serves(mirror: Mirror, version: str) -> bool:
    try:
        return bool(json.loads(mirror.get("current/manifest.json"))["version"] == version)
    except (OSError, ValueError, KeyError):
        return False


def wait_served(ctl: Controller, group: list[Mirror], version: str, started: float) -> float:
    """Seconds from ``started`` until every mirror serves ``version`` over HTTP."""
    waiting = list(group)
    deadline = started + SERVE_TIMEOUT
    while waiting:
        if ctl.proc is None or ctl.proc.poll() is not None:
            raise BenchError("the controller exited")
        if time.monotonic() > deadline:
            raise BenchError(
                f"{', '.join(m.name for m in waiting)} did not serve {version} in {SERVE_TIMEOUT:g}s"
            )
        waiting = [m for m in waiting if not serves(m, version)]
        if waiting:
            time.sleep(0.05)
    return time.monotonic() - started


def synced(api: Api, group: list[Mirror], version: str) -> dict[str, dict[str, Any]]:
    """Each mirror's binhost_synced event for ``version`` (waited for: it follows the switch)."""
    deadline = time.monotonic() + 60
    while True:
        events = call(api, "GET", "/admin/api/events?type=binhost_synced&limit=1000")["events"]
        found = {
            e["data"]["name"]: e["data"]
            for e in events
            if e["data"].get("release") == version and e["data"].get("name") in {m.name for m in group}
        }
        if len(found) == len(group):
            return found
        if time.monotonic() > deadline:
            raise BenchError(
                f"no binhost_synced event of {version} for {sorted({m.name for m in group} - set(found))}"
            )
        time.sleep(0.1)


def push_figures(served_s: float, events: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "served_s": round(served_s, 2),
        "per_mirror": {
            name: {"bytes": e["bytes"], "files": e["files"], "seconds": e["seconds"]}
            for name, e in sorted(events.items())
        },
    }


def bench_round(
    api: Api, ctl: Controller, work: Path, ssh: Path, count: int, first: str, second: str
) -> dict[str, Any]:
    if call(api, "GET", "/admin/api/releases")["current"] != first:
        call(api, "POST", f"/admin/api/releases/{first}/promote")
    with mirrors(work / f"mirrors-{count}", count) as started:
        # The controller reads its --ssh-identity and --ssh-known-hosts at every ssh.
        shutil.copy(started.identity, ssh / "id_ed25519")
        shutil.copy(started.known_hosts, ssh / "known_hosts")
        group = list(started)
        say(f"{count} mirror(s): adding them while {first} is current")
        t0 = time.monotonic()
        for mirror in group:
            body = {
                "kind": "rsync",
                "url": mirror.url,
                "destination": mirror.destination,
                "networks": ["lan"],
            }
            call(api, "PUT", f"/admin/api/binhosts/{mirror.name}", body)
        first_push = push_figures(wait_served(ctl, group, first, t0), synced(api, group, first))
        say(f"{count} mirror(s): promoting {second}")
        t0 = time.monotonic()
        call(api, "POST", f"/admin/api/releases/{second}/promote")
        second_push = push_figures(wait_served(ctl, group, second, t0), synced(api, group, second))
        for mirror in group:
            call(api, "DELETE", f"/admin/api/binhosts/{mirror.name}")
    return {"first": first_push, "second": second_push}


def run(opts: Options) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-binhosts-"))
    children = Children()
    figures: dict[str, Any] = {"env": env_info(), "packages": opts.packages, "rounds": {}}
    try:
        ctl_prefix = prefixes.create_prefix(prefixes.PrefixConfig(work / "prefix", prefixes.Role.CONTROLLER))
        changed = max(1, round(opts.packages * opts.changed / 100))
        figures["changed"] = changed
        say(f"writing {opts.packages} gpkgs into staging")
        make_gpkgs(ctl_prefix, opts.packages, "1")
        ssh = work / "ssh"
        ssh.mkdir()
        data = work / "data"
        data.mkdir()
        ctl = Controller(
            children,
            data,
            ping_interval=5.0,
            extra=[
                "--portage-eprefix",
                str(ctl_prefix.root),
                "--ssh-identity",
                str(ssh / "id_ed25519"),
                "--ssh-known-hosts",
                str(ssh / "known_hosts"),
            ],
        )
        ctl.start(timeout=120)
        assert ctl.ports is not None
        api = Api(ctl.ports.admin, timeout=1800, admin_key=ctl.admin_key)
        try:
            say("cutting release 1")
            first = call(api, "POST", "/admin/api/releases", {"notes": "bench 1"})
            call(api, "POST", f"/admin/api/releases/{first['version']}/promote")
            say(f"rebuilding {changed} packages, cutting release 2")
            make_gpkgs(ctl_prefix, changed, "2")
            second = call(api, "POST", "/admin/api/releases", {"notes": "bench 2"})
            figures["release_bytes"] = first.get("total_size")
            for count in opts.mirrors:
                figures["rounds"][str(count)] = bench_round(
                    api, ctl, work, ssh, count, first["version"], second["version"]
                )
        finally:
            api.close()
            ctl.stop()
    finally:
        children.close()
        if opts.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return figures


def report(figures: dict[str, Any]) -> None:
    print(
        f"publish: {figures['packages']} packages, {figures['changed']} changed in the second release "
        f"(release 1: {figures.get('release_bytes') or '?'} bytes)"
    )
    print(
        f"{'mirrors':>7} {'push':>6} {'all serve s':>11} {'mirror':>9} {'bytes sent':>11} "
        f"{'files':>6} {'push s':>7} {'2nd/1st':>8}"
    )
    worst = 0.0
    for count, round_ in figures["rounds"].items():
        for which in ("first", "second"):
            push = round_[which]
            for i, (name, m) in enumerate(push["per_mirror"].items()):
                share = ""
                if which == "second":
                    ratio = m["bytes"] / max(1, round_["first"]["per_mirror"][name]["bytes"])
                    worst = max(worst, ratio)
                    share = f"{ratio:.1%}"
                head = f"{count:>7} {which:>6} {push['served_s']:>11.2f}" if i == 0 else " " * 26
                print(f"{head} {name:>9} {m['bytes']:>11} {m['files']:>6} {m['seconds']:>7.2f} {share:>8}")
    print(
        f"second push under {TARGET_SHARE:.0%} of the first's bytes: "
        f"{'met' if worst < TARGET_SHARE else 'MISSED'} (worst {worst:.1%})"
    )


def serving(args: tuple[str, ...]) -> dict[str, Any] | None:
    """bench/binhosts_serving.py's figures (it prints its own table), or None without it."""
    try:
        import binhosts_serving  # bench/binhosts_serving.py
    except ImportError:
        say("serving: bench/binhosts_serving.py is not in this checkout; not measured")
        return None
    figures: dict[str, Any] = binhosts_serving.run(list(args))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mirrors", type=_counts, default=(1, 2, 4), help="mirror counts (default 1,2,4)")
    parser.add_argument("--packages", type=int, default=1000, help="packages in a release (default 1000)")
    parser.add_argument(
        "--changed", type=float, default=5.0, help="per cent rebuilt for release 2 (default 5)"
    )
    parser.add_argument("--no-serving", action="store_true", help="skip bench/binhosts_serving.py")
    parser.add_argument("--serving", default="", help="arguments for bench/binhosts_serving.py, one string")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and its logs")
    ns = parser.parse_args()
    if ns.packages < 1 or not 0 < ns.changed <= 100:
        parser.error("--packages must be at least 1 and --changed in (0, 100]")
    opts = Options(
        ns.mirrors,
        ns.packages,
        ns.changed,
        None if ns.no_serving else tuple(shlex.split(ns.serving)),
        ns.keep,
        ns.json_path,
    )
    own_pid_group()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    try:
        figures = run(opts)
        report(figures)
        if opts.serving is not None:
            figures["serving"] = serving(opts.serving)
    except BenchError as exc:
        print(f"bench/binhosts.py: {exc}", file=sys.stderr)
        sys.exit(1)
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
