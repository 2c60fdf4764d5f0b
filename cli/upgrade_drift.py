"""Drift: where the installed packages differ from a release.

Packages are matched by category/name and slot (the sub-slot aside). An
installed package whose match in the release has another version is
drift; an installed package the release does not have is only listed
(the release builds what the swarm builds, a machine may hold more). A
release's package that is not installed is not drift either, unless the
world file selects it: a machine takes from a release what it uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from swarm.cli.upgrade_manifest import Manifest, Package, base_slot, split_cpv

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Installed:
    cpv: str
    slot: str  # without the sub-slot

    @property
    def key(self) -> tuple[str, str]:
        return split_cpv(self.cpv)[0], self.slot

    @property
    def version(self) -> str:
        return split_cpv(self.cpv)[1]


@dataclass(frozen=True, slots=True)
class Drifted:
    package: str  # category/name
    slot: str
    installed: str  # version ("" when the world file wants it and it is not installed)
    release: str  # the release's version

    @property
    def target(self) -> str:
        """The atom that takes it to the release: an exact version (a downgrade where needed)."""
        return f"={self.package}-{self.release}"

    def as_json(self) -> dict[str, str]:
        return {
            "package": self.package,
            "slot": self.slot,
            "installed": self.installed,
            "release": self.release,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    drift: tuple[Drifted, ...]  # installed, another version in the release
    missing: tuple[Drifted, ...]  # in the world file and the release, not installed
    outside: tuple[str, ...]  # installed cpvs the release does not have

    @property
    def to_emerge(self) -> tuple[str, ...]:
        return tuple(d.target for d in (*self.drift, *self.missing))


def installed_packages(vdb: Path) -> list[Installed]:
    """The vdb: <EROOT>/var/db/pkg/<category>/<name-version>/ with its SLOT file."""
    found: list[Installed] = []
    if not vdb.is_dir():
        return found
    for category in sorted(vdb.iterdir()):
        if not category.is_dir() or category.name.startswith((".", "-")):
            continue
        for entry in sorted(category.iterdir()):
            # Portage merges into -MERGING-<pf> first: not installed until renamed.
            if not entry.is_dir() or entry.name.startswith(("-MERGING-", ".")):
                continue
            cpv = f"{category.name}/{entry.name}"
            try:
                split_cpv(cpv)
            except ValueError:
                log.warning("skipping %s in the vdb: not a package-version", cpv)
                continue
            try:
                slot = (entry / "SLOT").read_text().strip()
            except FileNotFoundError:
                slot = "0"
            found.append(Installed(cpv, base_slot(slot)))
    return found


def world_packages(world_file: Path) -> set[str]:
    """category/name of each package the world file selects (sets and versions aside)."""
    try:
        lines = world_file.read_text().splitlines()
    except FileNotFoundError:
        return set()
    names = set()
    for line in lines:
        atom = line.strip().split(":", 1)[0]
        if atom and not atom.startswith(("@", "#")) and "/" in atom and atom[0].isalnum():
            names.add(atom)
    return names


def release_keys(manifest: Manifest) -> dict[tuple[str, str], Package]:
    return {(split_cpv(p.cpv)[0], base_slot(p.slot)): p for p in manifest.packages}


def compare(installed: Iterable[Installed], world: Iterable[str], manifest: Manifest) -> Comparison:
    wanted = release_keys(manifest)
    drift, outside = [], []
    have: set[str] = set()
    for pkg in installed:
        name, slot = pkg.key
        have.add(name)
        match = wanted.get(pkg.key)
        if match is None:
            outside.append(pkg.cpv)
            continue
        release_version = split_cpv(match.cpv)[1]
        if release_version != pkg.version:
            drift.append(Drifted(name, slot, pkg.version, release_version))
    missing = []
    for (name, slot), match in sorted(wanted.items()):
        if name in world and name not in have:
            missing.append(Drifted(name, slot, "", split_cpv(match.cpv)[1]))
    return Comparison(tuple(drift), tuple(missing), tuple(outside))
