"""``swarm-upgrade``: take a client machine to a release of the swarm, with zero drift.

Talks only to the controller's public tier, and lets stock Portage verify
every package against the release key. Packages come from the binhosts
that hold the release, those of this machine's network first, then the
others and the controller (upgrade_binhosts); wherever a file comes from,
it must be the one the signed manifest names:

- ``trust URL [--network NAME]``: fetch the release key, show its
  fingerprint, and install it into Portage's verification keyring (as
  getuto does); remember the network this machine is on;
- ``status``: the release installed, the current one, the drift, and the
  binhosts binrepos.conf points at;
- ``verify [--release V]``: the manifest's signature, then a pretend run;
- ``apply [--release V]``: install the release's exact versions, binary
  packages only, signatures verified by Portage, ending with no drift;
- ``rollback``: back to the release applied before, with the same checks.

Exit codes: 0 done; 1 failed (emerge failed or Portage refused a package,
drift remains; ``status``: there is drift); 2 bad usage; 3 the controller
could not be reached, or what it served is not trusted.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm import __version__
from swarm.cli.upgrade_binhosts import Entry, check_network, entries, parse_answer, section_version
from swarm.cli.upgrade_binrepo import BinreposConf
from swarm.cli.upgrade_drift import Comparison, compare, installed_packages, world_packages
from swarm.cli.upgrade_errors import EXIT_FAILED, EXIT_UNTRUSTED, UpgradeError
from swarm.cli.upgrade_keyring import Keyring, inspect_key, spaced
from swarm.cli.upgrade_manifest import Manifest, check_index, check_version, parse_manifest
from swarm.cli.upgrade_portage import Site, emerge, load_site, verify_gpkgs
from swarm.cli.upgrade_remote import PublicTier
from swarm.cli.upgrade_snapshot import take_snapshot
from swarm.cli.upgrade_state import Config, StateDir, load_config, save_config
from swarm.files import sha256_file

TRUSTED_VALIDITY = ("f", "u")


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


class Upgrade:
    """One swarm-upgrade run against one Portage installation."""

    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.site: Site = load_site(ns.eprefix)
        self.state_dir = StateDir(self.site.state_dir)
        self.keyring = Keyring(self.site.gnupg_home, self.site.verify_user, self.site.verify_group)
        self.binrepos = BinreposConf(self.site.portage_config)

    # -- pieces --------------------------------------------------------------------

    def config(self) -> Config:
        return load_config(self.site.config_file)

    def compare(self, manifest: Manifest) -> Comparison:
        return compare(installed_packages(self.site.vdb), world_packages(self.site.world_file), manifest)

    def verified_manifest(
        self, tier: PublicTier, config: Config, version: str
    ) -> tuple[Manifest, bytes, bytes]:
        """The release's manifest, its signature checked as Portage checks a gpkg's."""
        step(f"fetching the manifest of {version} and its signature")
        raw, signature = tier.manifest(version)
        self.keyring.verify_detached(raw, signature, config.fingerprint, f"the manifest of {version}")
        manifest = parse_manifest(raw, version)
        step(
            f"manifest of {version}: good signature by the release key {spaced(config.fingerprint)}; "
            f"{manifest.package_count} packages, cut {_when(manifest.created_at)}"
        )
        check_index(tier.packages_index(version), manifest)
        step(f"the release's Packages index lists exactly the manifest's {manifest.package_count} packages")
        return manifest, raw, signature

    def target_version(self, tier: PublicTier) -> str:
        if self.ns.release:
            return check_version(self.ns.release)
        step(f"asking {tier.url} for the current release")
        version = tier.current()
        step(f"current release: {version}")
        return version

    def show_plan(self, comparison: Comparison, version: str) -> None:
        if not comparison.to_emerge:
            step(f"nothing to install: every installed package is at its version in {version}")
            return
        step(f"{len(comparison.to_emerge)} package(s) to take to {version}:")
        for d in comparison.drift:
            print(f"    {d.package}:{d.slot}  {d.installed} -> {d.release}")
        for d in comparison.missing:
            print(f"    {d.package}:{d.slot}  (in the world file) -> {d.release}")

    def release_entries(self, tier: PublicTier, config: Config, version: str) -> list[Entry]:
        """The binrepos.conf entries for ``version``: the binhosts the controller
        names for this machine's network, then the controller itself."""
        where = f"network {config.network}" if config.network else "no network set"
        step(f"asking {tier.url} for the binhosts that hold {version} ({where})")
        answer = tier.binrepos(version, config.network)
        try:
            found = parse_answer(answer, version) if answer is not None else []
        except (ValueError, configparser.Error) as exc:
            raise UpgradeError(
                f"the controller's binrepos.conf answer for {version} is malformed: {exc}"
            ) from None
        chosen = entries(found, version, tier.release_url(version))
        for entry in chosen:
            print(f"    {entry.binhost}: {entry.sync_uri} (priority {entry.priority})")
        return chosen

    def caches(self, version: str) -> list[Path]:
        """Portage's download caches of ``version``: one per binhost entry of it."""
        cache = self.site.binhost_cache
        if not cache.is_dir():
            return []
        return sorted(p for p in cache.iterdir() if section_version(p.name) == version)

    def check_fetched(self, manifest: Manifest) -> None:
        """Before anything is merged: Portage verifies every package it fetched (the
        atoms and their dependencies, from whichever binhost), and each must be the
        very file the signed manifest names (sha256 and size)."""
        caches = self.caches(manifest.version)
        fetched = [
            (pkg, cache / pkg.path)
            for cache in caches
            for pkg in manifest.packages
            if (cache / pkg.path).is_file()
        ]
        if not fetched:
            where = ", ".join(map(str, caches)) or str(self.site.binhost_cache)
            raise UpgradeError(f"emerge fetched nothing of {manifest.version} into {where}")
        step(
            f"Portage verifies the {len(fetched)} fetched package(s): signatures by a trusted key, checksums"
        )
        refused = verify_gpkgs(self.site, [path for _pkg, path in fetched])
        bad = {path for pkg, path in fetched if sha256_file(path) != (pkg.sha256, pkg.size)}
        for path in sorted(bad):
            print(f"    not the file the manifest signs: {path}")
        if refused or bad:
            # Gone, so that no later emerge takes them from the cache.
            for _pkg, path in fetched:
                path.unlink(missing_ok=True)
            raise UpgradeError(
                f"{len(set(refused) | {str(p) for p in bad})} fetched package(s) of {manifest.version} "
                "refused (see above); nothing was installed",
                EXIT_UNTRUSTED,
            )
        step(f"all {len(fetched)} verified by Portage, and each is the file the manifest signs")

    def forget_downloads(self, keep: set[str]) -> None:
        """Drop the download caches of releases no longer applied nor to roll back to."""
        cache = self.site.binhost_cache
        if not cache.is_dir():
            return
        for path in cache.iterdir():
            version = section_version(path.name)
            if version is not None and version not in keep:
                shutil.rmtree(path, ignore_errors=True)

    # -- commands ------------------------------------------------------------------

    def trust(self) -> int:
        tier = PublicTier(self.ns.url)
        step(f"fetching the release key from {tier.url}/releases/key.asc")
        armored = tier.key()
        info = inspect_key(armored)
        print(f"    fingerprint: {spaced(info.fingerprint)}")
        for uid in info.uids:
            print(f"    user id:     {uid}")
        network: str = self.ns.network or ""
        expected = (self.ns.fingerprint or "").replace(" ", "").upper()
        if expected and expected != info.fingerprint:
            raise UpgradeError(
                f"the controller's key is {spaced(info.fingerprint)}, not {spaced(expected)}: not trusted",
                EXIT_UNTRUSTED,
            )
        if not expected:
            print("    (compare it with the controller's: swarm-cli release key, or the console)")
        step(f"Portage's verification keyring: {self.keyring.home}")
        if self.keyring.ensure():
            step(f"made the keyring's local trust key {self.keyring.local_key()} (as getuto does)")
        self.keyring.trust(armored, info.fingerprint)
        validity = self.keyring.validity(info.fingerprint)
        if validity not in TRUSTED_VALIDITY:
            raise UpgradeError(f"the release key was imported but gpg rates it {validity!r}, not full trust")
        who = (
            f"{self.site.verify_user}:{self.site.verify_group}"
            if self.keyring.portage_identity()
            else "Portage"
        )
        step(f"release key imported and locally signed: {who} reads it with full trust")
        try:
            before = self.config()
        except UpgradeError:
            before = None
        save_config(self.site.config_file, Config(tier.url, info.fingerprint, network))
        changed = (
            f" (was {before.url}, key {spaced(before.fingerprint)}, network {before.network or 'none'})"
            if before and before != self.config()
            else ""
        )
        on = f"on network {network}" if network else "on no network in particular (every binhost alike)"
        step(f"remembered {tier.url}, {on}, in {self.site.config_file}{changed}")
        return 0

    def status(self) -> int:
        config = self.config()
        state = self.state_dir.load()
        report: dict[str, Any] = {
            "controller": config.url,
            "fingerprint": config.fingerprint,
            "network": config.network or None,
            "binhosts": [
                {"name": e.binhost, "sync_uri": e.sync_uri, "priority": e.priority}
                for e in self.binrepos.entries()
            ],
            "installed": state.installed,
            "installed_at": state.last_applied_at(),
            "before": state.before,
            "current": None,
            "drift": [],
            "outside": [],
        }
        unreachable = ""
        try:
            report["current"] = PublicTier(config.url).current()
        except UpgradeError as exc:
            unreachable = str(exc)
        if state.installed:
            kept = self.state_dir.kept_manifest(state.installed)
            if kept is None:
                raise UpgradeError(f"the manifest of {state.installed} is missing from {self.state_dir.path}")
            comparison = self.compare(parse_manifest(kept[0], state.installed))
            report["drift"] = [d.as_json() for d in (*comparison.drift, *comparison.missing)]
            report["outside"] = list(comparison.outside)
        if self.ns.json:
            print(json.dumps({**report, "error": unreachable or None}, indent=2))
        else:
            self._print_status(report, unreachable)
        if report["drift"]:
            return EXIT_FAILED
        return EXIT_UNTRUSTED if unreachable else 0

    def _print_status(self, report: dict[str, Any], unreachable: str) -> None:
        print(f"controller: {report['controller']}  (release key {spaced(report['fingerprint'])})")
        print(f"network:    {report['network'] or 'none (every binhost alike)'}")
        installed = report["installed"]
        print(
            f"installed:  {installed} (applied {_when(report['installed_at'])})"
            if installed
            else "installed:  none (swarm-upgrade apply takes this machine to the current release)"
        )
        current = report["current"]
        if current is None:
            print(f"current:    unknown ({unreachable})")
        else:
            note = "" if current == installed else "  (swarm-upgrade apply takes this machine to it)"
            print(f"current:    {current}{note}")
        if report["binhosts"]:
            print(f"binhosts:   {len(report['binhosts'])} in {self.binrepos.target}, the first preferred:")
            for b in report["binhosts"]:
                print(f"    {b['name']}: {b['sync_uri']} (priority {b['priority']})")
        if not installed:
            return
        if not report["drift"]:
            print(f"drift:      none: every installed package is at its version in {installed}")
        else:
            print(f"drift:      {len(report['drift'])} package(s) differ from {installed}:")
            for d in report["drift"]:
                print(
                    f"    {d['package']}:{d['slot']}  installed {d['installed'] or '(not installed)'}, "
                    f"release {d['release']}"
                )
        if report["outside"]:
            print(f"not in the release: {len(report['outside'])} installed package(s)")
            if self.ns.verbose:
                for cpv in report["outside"]:
                    print(f"    {cpv}")

    def verify(self) -> int:
        config = self.config()
        tier = PublicTier(config.url)
        version = self.target_version(tier)
        manifest, _raw, _sig = self.verified_manifest(tier, config, version)
        comparison = self.compare(manifest)
        self.show_plan(comparison, version)
        if not comparison.to_emerge:
            return 0
        # The pretend run reads the release's index through an entry of its
        # own, put back as it was afterwards: verify changes nothing.
        snapshot = self.binrepos.point_at(version, self.release_entries(tier, config, version))
        try:
            code = emerge(self.site, ["--pretend", "--getbinpkgonly", "--oneshot", *comparison.to_emerge])
        finally:
            snapshot.restore()
        if code != 0:
            raise UpgradeError(f"emerge --pretend cannot install {version} here (exit {code})")
        step(f"{version} verifies: its manifest is signed by the release key and Portage can install it")
        return 0

    def apply(self, *, rollback: bool = False) -> int:
        with self.state_dir.locked():
            state = self.state_dir.load()
            config = self.config()
            tier = PublicTier(config.url)
            if rollback:
                if state.before is None:
                    only = state.installed or "no release"
                    raise UpgradeError(f"nothing to roll back to: {only} is the only release applied")
                version = state.before
                step(f"rolling back from {state.installed} to {version}, the release applied before it")
            else:
                version = self.target_version(tier)
            manifest, raw, signature = self.verified_manifest(tier, config, version)
            comparison = self.compare(manifest)
            self.show_plan(comparison, version)
            action = "rollback" if rollback else "apply"
            if comparison.to_emerge and not self.ns.no_snapshot:
                take_snapshot(f"swarm-upgrade {action} to {version}", whole_system=self.site.whole_system)
            # A release not applied here before is downloaded afresh: a name
            # deleted unpromoted on the controller may come back with other files.
            self.forget_downloads(set(state.stack))
            chosen = self.release_entries(tier, config, version)
            step(f"binrepos.conf: following {version} from {len(chosen)} binhost(s), verify-signature = true")
            snapshot = self.binrepos.point_at(version, chosen)
            try:
                self._install(manifest, comparison.to_emerge)
            except BaseException as exc:
                snapshot.restore()
                # What was fetched of a refused release (its index included) must
                # not be taken from the cache by a later run.
                self.forget_downloads(set(state.stack))
                kept = state.installed or "no release"
                step(f"binrepos.conf put back as it was; {kept} stays the installed one")
                self.state_dir.save(state.logged(action, version, False, str(exc)))
                raise
            state = (state.rolled_back() if rollback else state.applied(version)).logged(
                action, version, True
            )
            self.state_dir.keep_manifest(version, raw, signature)
            self.state_dir.save(state)
            self.state_dir.forget_manifests(set(state.stack))
            self.forget_downloads(set(state.stack))
        step(f"{'rolled back to' if rollback else 'applied'} {version}: zero drift")
        return 0

    def _install(self, manifest: Manifest, atoms: tuple[str, ...]) -> None:
        if atoms:
            # Everything first, verified, so that a package Portage refuses
            # stops the run before anything is merged.
            step("fetching every package first; Portage checks each against the index and its signature")
            code = emerge(self.site, ["--getbinpkgonly", "--oneshot", "--fetchonly", *atoms])
            if code != 0:
                raise UpgradeError(
                    f"Portage refused to fetch or verify the packages of {manifest.version} (exit {code}); "
                    "nothing was installed"
                )
            self.check_fetched(manifest)
            step("installing")
            code = emerge(self.site, ["--getbinpkgonly", "--oneshot", *atoms])
            if code != 0:
                raise UpgradeError(f"emerge failed (exit {code}) while installing {manifest.version}")
        after = self.compare(manifest)
        left = (*after.drift, *after.missing)
        if left:
            names = ", ".join(f"{d.package} {d.installed or '-'} (release {d.release})" for d in left)
            raise UpgradeError(f"drift remains after emerge: {names}")


def _release(text: str) -> str:
    try:
        return check_version(text)
    except UpgradeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _network(text: str) -> str:
    try:
        return check_network(text)
    except UpgradeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _eprefix_option(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--eprefix",
        default=default if default is not None else argparse.SUPPRESS,
        metavar="DIR",
        help="a Gentoo prefix to work on (PORTAGE_OVERRIDE_EPREFIX for every Portage tool); "
        "ROOT in the environment is honoured as emerge honours it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarm-upgrade",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog="Exit codes: 0 done, 1 failed (status: drift), 2 bad usage, 3 unreachable or not trusted.",
    )
    parser.add_argument("--version", action="version", version=f"swarm-upgrade {__version__}")
    _eprefix_option(parser, os.environ.get("PORTAGE_OVERRIDE_EPREFIX", ""))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("trust", help="install the controller's release key into Portage's keyring")
    p.add_argument("url", help="the controller's public tier, e.g. http://controller:8100")
    p.add_argument("--fingerprint", help="refuse the key unless it has this fingerprint")
    p.add_argument(
        "--network",
        type=_network,
        metavar="NAME",
        help="the network this machine is on (as drones name theirs: lan, tailscale...): its binhosts "
        "are preferred, the others are fallbacks (default: none, every binhost alike)",
    )
    p.set_defaults(run=Upgrade.trust)
    p = sub.add_parser("status", help="the installed release, the current one, and the drift")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="list the installed packages the release lacks"
    )
    p.set_defaults(run=Upgrade.status)
    p = sub.add_parser("verify", help="check a release's signature and do a pretend run")
    p.add_argument("--release", type=_release, metavar="V", help="this release (default: the current one)")
    p.set_defaults(run=Upgrade.verify)
    p = sub.add_parser("apply", help="take this machine to a release: exact versions, verified binaries")
    p.add_argument("--release", type=_release, metavar="V", help="this release (default: the current one)")
    p.add_argument("--no-snapshot", action="store_true", help="no btrfs snapshot first, even with snapper")
    p.set_defaults(run=Upgrade.apply)
    p = sub.add_parser("rollback", help="back to the release applied before, with the same checks")
    p.add_argument("--no-snapshot", action="store_true", help="no btrfs snapshot first, even with snapper")
    p.set_defaults(run=lambda upgrade: upgrade.apply(rollback=True), release=None)
    for command in sub.choices.values():
        # After the command too (SUPPRESS: it must not undo one given before it).
        _eprefix_option(command, None)
    return parser


def main(argv: list[str] | None = None) -> None:
    ns = build_parser().parse_args(argv)
    run: Callable[[Upgrade], int] = ns.run
    try:
        code = run(Upgrade(ns))
    except UpgradeError as exc:
        sys.stdout.flush()
        print(f"swarm-upgrade: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
