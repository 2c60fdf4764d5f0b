"""Releases benchmark: cut, sign and promote releases of 200 and 1,000 small
real gpkgs through a real controller's admin API, then ``swarm-upgrade
apply`` on a client prefix for 100 changed packages. It prints figures; it
asserts nothing about timing.

Run from the repository root::

    .venv/bin/python bench/releases.py                      # 200 and 1,000, about 5 minutes
    .venv/bin/python bench/releases.py --sizes 200 --changed 20
    .venv/bin/python bench/releases.py --json figures.json --keep

For each size N, with a fresh controller whose staging holds N gpkgs
(tools/gpkgs.py: Portage's own gpkg code, the metadata of a package emerge
built), unsigned as drones upload them:

- cut: ``POST /admin/api/releases``, wall seconds from request to answer;
  the first cut signs every package, so it is timed twice: a second forced
  cut of the same (already signed) staging gives the cut without signing,
  and (first - second) / N the seconds to sign one package;
- bytes copied by a cut: every file under the release directory that is
  not a hard link of a staging file (same device and inode) counts with its
  size; the target is the index and the manifest only;
- promote: ``POST /admin/api/releases/{v}/promote``, alternating between
  the two releases ``--promotes`` times: median and max milliseconds
  (target: under 50 ms whatever the size).

Then, once (``--changed`` packages, default 100): a client prefix trusts the
release key (``swarm-upgrade trust``), applies the first release of the
smallest size, then ``--changed`` of its packages are rebuilt as version 2
(the controller is stopped to inject them into staging and started again),
a release is cut and promoted, and ``swarm-upgrade apply`` takes the client
to it: seconds, and the drift ``swarm-upgrade status`` shows afterwards.
When this checkout has no ``swarm-upgrade``, that part says so and is not
measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import PYTHON, ROOT, Api, BenchError, Children, Controller, env_info, own_pid_group, say

sys.path.insert(0, str(ROOT / "tools"))
import gpkgs  # tools/gpkgs.py
import prefix as prefixes  # tools/prefix.py

TEMPLATE_ATOM = "swarm-test/leaf-data"
RELEASES = "/admin/api/releases"
PROMOTE_TARGET_MS = 50.0


@dataclass(frozen=True, slots=True)
class Options:
    sizes: tuple[int, ...]
    promotes: int
    changed: int
    keep: bool
    json_path: Path | None


def _sizes(text: str) -> tuple[int, ...]:
    if text.strip() == "none":
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 200,1000, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive (or none: the client part only)")
    return sizes


# -- packages --------------------------------------------------------------


def template_gpkg(work: Path) -> Path:
    """A gpkg emerge really built, whose metadata every bench package copies."""
    drone = prefixes.create_prefix(prefixes.PrefixConfig(work / "drone", prefixes.Role.DRONE))
    result = prefixes.run_emerge(drone, "--buildpkgonly", "--oneshot", TEMPLATE_ATOM, timeout=300)
    if not result.ok:
        raise BenchError(f"emerge {TEMPLATE_ATOM} failed: {result.output[-2000:]}")
    found = sorted((drone.pkgdir / TEMPLATE_ATOM).glob("*.gpkg.tar"))
    if not found:
        raise BenchError(f"emerge built no gpkg of {TEMPLATE_ATOM}")
    return found[-1]


def make_gpkgs(prefix: prefixes.Prefix, template: Path, count: int, version: str, first: int = 0) -> float:
    """``count`` packages into the prefix's PKGDIR (its Packages index too); seconds taken."""
    result = subprocess.run(
        [
            PYTHON,
            str(ROOT / "tools" / "gpkgs.py"),
            "--inject",
            "--template",
            str(template),
            "--count",
            str(count),
            "--version",
            version,
            "--first",
            str(first),
        ],
        env=prefix.env(),
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"tools/gpkgs.py failed: {result.stderr[-2000:]}")
    return float(json.loads(result.stdout.splitlines()[-1])["seconds"])


# -- the controller's releases ---------------------------------------------


def inodes(root: Path) -> set[tuple[int, int]]:
    return {(s.st_dev, s.st_ino) for p in root.rglob("*") if p.is_file() for s in (p.stat(),)}


def copied_bytes(release_dir: Path, staging: set[tuple[int, int]]) -> tuple[int, int, list[str]]:
    """(bytes not hard-linked from staging, files linked, names of the files copied)."""
    copied, linked, names = 0, 0, []
    for path in sorted(release_dir.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        st = path.stat()
        if (st.st_dev, st.st_ino) in staging and st.st_nlink > 1:
            linked += 1
        else:
            copied += st.st_size
            names.append(str(path.relative_to(release_dir)))
    return copied, linked, names


def release_dir(data_dir: Path, version: str) -> Path:
    """A release's directory (controller/releases.py's layout), wherever releases_dir is."""
    for manifest in data_dir.rglob(f"releases/{version}/manifest.json"):
        return manifest.parent
    raise BenchError(f"no directory of release {version} under {data_dir}")


def timed(api: Api, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[float, Any]:
    started = time.perf_counter()
    status, reply = api.request(method, path, body)
    seconds = time.perf_counter() - started
    if status >= 300:
        raise BenchError(f"{method} {path} answered {status}: {reply}")
    return seconds, reply


def new_controller(children: Children, data_dir: Path, eprefix: Path) -> Controller:
    data_dir.mkdir(parents=True, exist_ok=True)
    return Controller(children, data_dir, ping_interval=5.0, extra=["--portage-eprefix", str(eprefix)])


@contextlib.contextmanager
def serving(ctl: Controller) -> Iterator[Api]:
    """The controller running (on the ports of its last run, if any) and its admin API."""
    ctl.start(timeout=120)
    assert ctl.ports is not None
    api = Api(ctl.ports.admin, timeout=1800, admin_key=ctl.admin_key)
    try:
        yield api
    finally:
        api.close()
        ctl.stop()


def bench_size(children: Children, work: Path, template: Path, size: int, promotes: int) -> dict[str, Any]:
    root = work / f"n{size}"
    ctl_prefix = prefixes.create_prefix(prefixes.PrefixConfig(root / "prefix", prefixes.Role.CONTROLLER))
    say(f"{size} packages: writing them into staging")
    made = make_gpkgs(ctl_prefix, template, size, "1")
    figures: dict[str, Any] = {"packages": size, "gpkgs_written_s": round(made, 2)}
    ctl = new_controller(children, root / "data", ctl_prefix.root)
    with serving(ctl) as api:
        staging = inodes(ctl_prefix.pkgdir)
        say(f"{size} packages: first cut (signs them)")
        first_s, first = timed(api, "POST", RELEASES, {"notes": f"bench {size}", "force": False})
        copied, linked, names = copied_bytes(
            release_dir(ctl.data_dir, first["version"]), inodes(ctl_prefix.pkgdir)
        )
        say(f"{size} packages: second cut of the same staging (nothing left to sign)")
        second_s, second = timed(api, "POST", RELEASES, {"notes": f"bench {size} again", "force": True})
        say(f"{size} packages: {promotes} promotes")
        times, floor = [], []
        for i in range(promotes):
            version = (first, second)[i % 2]["version"]
            seconds, _ = timed(api, "POST", f"{RELEASES}/{version}/promote")
            times.append(seconds * 1000)
            # The same admin tier answering a request that does nothing: HTTP, auth and load.
            seconds, _ = timed(api, "GET", "/admin/api/drones")
            floor.append(seconds * 1000)
        figures.update(
            {
                "cut_s": round(first_s, 3),
                "cut_again_s": round(second_s, 3),
                "sign_per_package_ms": round((first_s - second_s) / size * 1000, 2),
                "bytes_copied": copied,
                "files_copied": names,
                "files_linked": linked,
                "staging_files_before_cut": len(staging),
                "promote_ms_median": round(statistics.median(times), 2),
                "promote_ms_max": round(max(times), 2),
                "admin_get_ms_median": round(statistics.median(floor), 2),
            }
        )
    return figures


# -- a client --------------------------------------------------------------


def swarm_upgrade() -> list[str] | None:
    """How to run swarm-upgrade from this checkout, or None when it has none."""
    found = subprocess.run(
        [
            PYTHON,
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('swarm.cli.upgrade') is None)",
        ],
        check=False,
    )
    return [PYTHON, "-m", "swarm.cli.upgrade"] if found.returncode == 0 else None


def bench_upgrade(children: Children, work: Path, template: Path, size: int, changed: int) -> dict[str, Any]:
    upgrade = swarm_upgrade()
    if upgrade is None:
        return {
            "measured": False,
            "why": "this checkout has no swarm-upgrade (branch i16-upgrade not merged)",
        }
    root = work / "upgrade"
    ctl_prefix = prefixes.create_prefix(prefixes.PrefixConfig(root / "prefix", prefixes.Role.CONTROLLER))
    say(f"client: a release of {size} packages")
    make_gpkgs(ctl_prefix, template, size, "1")
    client = prefixes.create_prefix(
        prefixes.PrefixConfig(root / "client", prefixes.Role.CLIENT, binhost="http://127.0.0.1:9/")
    )
    # swarm-upgrade writes the client's binrepos.conf entry itself.
    (client.config_root / "binrepos.conf").unlink(missing_ok=True)

    def run(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        done = subprocess.run(
            [*upgrade, "--eprefix", str(client.root), *args],
            env=client.env(),
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(
                f"swarm-upgrade {' '.join(args)} exited {done.returncode}: "
                f"{done.stdout[-1500:]}{done.stderr[-1500:]}"
            )
        return time.perf_counter() - started, done

    # A machine takes from a release what it uses: the world file selects them all.
    world = client.root / "var" / "lib" / "portage" / "world"
    world.parent.mkdir(parents=True, exist_ok=True)
    world.write_text("".join(f"{gpkgs.CATEGORY}/{gpkgs.bench_name(i)}\n" for i in range(size)))
    # The same ports after a restart: the client keeps the URL it trusted.
    ctl = new_controller(children, root / "data", ctl_prefix.root)
    with serving(ctl) as api:
        _, first = timed(api, "POST", RELEASES, {"notes": "before", "force": False})
        timed(api, "POST", f"{RELEASES}/{first['version']}/promote")
        assert ctl.ports is not None
        run("trust", f"http://127.0.0.1:{ctl.ports.public}")
        say(f"client: applying {first['version']} ({size} packages)")
        initial_s, _ = run("apply")
    # Staging changes only through the controller's own Portage worker: stopped while they are written.
    say(f"client: {changed} packages rebuilt as version 2")
    make_gpkgs(ctl_prefix, template, changed, "2")
    with serving(ctl) as api:
        _, second = timed(api, "POST", RELEASES, {"notes": f"{changed} changed", "force": False})
        timed(api, "POST", f"{RELEASES}/{second['version']}/promote")
        say(f"client: applying {second['version']}")
        apply_s, _ = run("apply")
        _, status = run("status", "--json")
    report = json.loads(status.stdout)
    return {
        "measured": True,
        "packages": size,
        "changed": changed,
        "initial_apply_s": round(initial_s, 2),
        "apply_s": round(apply_s, 2),
        "status_after": report,
    }


def run(opts: Options) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-releases-"))
    # Portage verifies signatures as nobody: the client's keyring below must be reachable.
    work.chmod(0o755)
    children = Children()
    figures: dict[str, Any] = {"env": env_info(), "sizes": {}}
    try:
        say("building the template package with emerge")
        template = template_gpkg(work)
        for size in opts.sizes:
            figures["sizes"][str(size)] = bench_size(children, work, template, size, opts.promotes)
        if opts.changed:
            sizes = opts.sizes or (opts.changed,)
            figures["upgrade"] = bench_upgrade(
                children, work, template, max(min(sizes), opts.changed), opts.changed
            )
    finally:
        children.close()
        if opts.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return figures


def report(figures: dict[str, Any]) -> None:
    if figures["sizes"]:
        report_sizes(figures["sizes"])
    upgrade = figures.get("upgrade")
    if upgrade is not None:
        report_upgrade(upgrade)


def report_sizes(sizes: dict[str, Any]) -> None:
    print(
        f"{'packages':>8} {'cut s':>8} {'cut again s':>12} {'sign/pkg ms':>12} {'copied':>10} "
        f"{'linked':>7} {'promote ms p50':>15} {'max':>7} {'GET ms p50':>11}"
    )
    for size, f in sizes.items():
        print(
            f"{size:>8} {f['cut_s']:>8.2f} {f['cut_again_s']:>12.2f} {f['sign_per_package_ms']:>12.2f} "
            f"{f['bytes_copied']:>10} {f['files_linked']:>7} {f['promote_ms_median']:>15.2f} "
            f"{f['promote_ms_max']:>7.2f} {f['admin_get_ms_median']:>11.2f}"
        )
        print(f"{'':>8} copied: {', '.join(f['files_copied']) or 'nothing'}")
    worst = max(f["promote_ms_max"] for f in sizes.values())
    print(
        f"promote target {PROMOTE_TARGET_MS:g} ms: "
        f"{'met' if worst < PROMOTE_TARGET_MS else 'MISSED'} (worst {worst:.2f} ms)"
    )


def report_upgrade(upgrade: dict[str, Any]) -> None:
    if not upgrade["measured"]:
        print(f"swarm-upgrade apply: not measured: {upgrade['why']}")
        return
    print(
        f"swarm-upgrade apply, {upgrade['changed']} of {upgrade['packages']} packages changed: "
        f"{upgrade['apply_s']:.1f} s (first apply of all {upgrade['packages']}: "
        f"{upgrade['initial_apply_s']:.1f} s)"
    )
    print(f"  status afterwards: {json.dumps(upgrade['status_after'])[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=_sizes, default=(200, 1000), help="packages per release (default 200,1000)"
    )
    parser.add_argument("--promotes", type=int, default=20, help="promotes timed per size (default 20)")
    parser.add_argument(
        "--changed",
        type=int,
        default=100,
        help="packages changed for swarm-upgrade apply (0: skip; default 100)",
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and its logs")
    ns = parser.parse_args()
    opts = Options(ns.sizes, max(1, ns.promotes), max(0, ns.changed), ns.keep, ns.json_path)
    own_pid_group()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    try:
        figures = run(opts)
    except BenchError as exc:
        print(f"bench/releases.py: {exc}", file=sys.stderr)
        sys.exit(1)
    report(figures)
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
