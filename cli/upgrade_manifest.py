"""A release's manifest.json as a client reads it.

manifest.json is a file format (controller/releases.py writes it, field
for field its Manifest, plus ``format``); a client machine parses the
file, not the controller's Python types, and so imports nothing of the
controller: swarm-upgrade runs where only the base dependencies are.
tests/test_upgrade_parts.py reads what the controller writes, to keep the
two in step. Fields this reader does not use are ignored, so fields added
to the format later do not break an older client.

The bytes are parsed only after their detached signature verified
(upgrade_keyring); this checks they are well formed, so that a controller
bug or a truncated download is one clear error, not a KeyError later.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from swarm.cli.upgrade_errors import EXIT_UNTRUSTED, EXIT_USAGE, UpgradeError

# As controller/releases.py: vYYYY.MM.DD, then vYYYY.MM.DD-N.
VERSION_RE = re.compile(r"^v\d{4}\.\d{2}\.\d{2}(?:-[1-9]\d{0,3})?\Z")
MANIFEST_FORMAT = 1
# category/package-version as Portage writes a cpv (PMS 3.1, 3.2).
CPV_RE = re.compile(
    r"^(?P<key>[A-Za-z0-9+_][A-Za-z0-9+_.-]*/[A-Za-z0-9+_][A-Za-z0-9+_-]*?)"
    r"-(?P<version>\d+(?:\.\d+)*[a-z]?(?:_(?:alpha|beta|pre|rc|p)\d*)*(?:-r\d+)?)\Z"
)


@dataclass(frozen=True, slots=True)
class Package:
    cpv: str
    slot: str
    path: str  # relative to the release directory, as in its Packages index
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    version: str
    created_at: float
    notes: str
    packages: tuple[Package, ...]
    signing_key: str

    @property
    def package_count(self) -> int:
        return len(self.packages)


def split_cpv(cpv: str) -> tuple[str, str]:
    """'cat/pn-1.2-r1' -> ('cat/pn', '1.2-r1'); ValueError when it is not a cpv."""
    match = CPV_RE.match(cpv)
    if match is None:
        raise ValueError(f"not a category/package-version: {cpv!r}")
    return match["key"], match["version"]


def base_slot(slot: str) -> str:
    """SLOT without its sub-slot ('0/1.2' -> '0'); an empty one is '0'."""
    return slot.partition("/")[0] or "0"


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise UpgradeError(f"not a release version: {version!r} (vYYYY.MM.DD or vYYYY.MM.DD-N)", EXIT_USAGE)
    return version


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(name)
    # JSON true is an int to isinstance: no field here is a boolean.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}{name} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _package(raw: Any, index: int) -> Package:
    if not isinstance(raw, dict):
        raise ValueError(f"packages[{index}] is not an object")
    where = f"packages[{index}]."
    cpv = _field(raw, "cpv", str, where)
    split_cpv(cpv)
    return Package(
        cpv=cpv,
        slot=_field(raw, "slot", str, where),
        path=_field(raw, "path", str, where),
        sha256=_field(raw, "sha256", str, where),
        size=_field(raw, "size", int, where),
    )


def parse_manifest(raw: bytes, version: str) -> Manifest:
    """The manifest of ``version``, or UpgradeError saying what is wrong with it."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this swarm-upgrade reads {MANIFEST_FORMAT}")
        manifest = Manifest(
            version=_field(data, "version", str, ""),
            created_at=float(_field(data, "created_at", (int, float), "")),
            notes=_field(data, "notes", str, ""),
            packages=tuple(_package(p, i) for i, p in enumerate(_field(data, "packages", list, ""))),
            signing_key=_field(data, "signing_key", str, ""),
        )
    except (ValueError, TypeError) as exc:
        raise UpgradeError(f"the manifest of {version} is malformed: {exc}") from None
    # A validly signed manifest of another release must not stand in for this one.
    if manifest.version != version:
        raise UpgradeError(
            f"the manifest served for {version} is the manifest of {manifest.version}", EXIT_UNTRUSTED
        )
    return manifest


def index_entries(index: str) -> list[dict[str, str]]:
    """A Portage Packages index: one dict per package block (the header block left out)."""
    blocks = [block for block in index.replace("\r\n", "\n").split("\n\n") if block.strip()]
    entries = []
    for block in blocks[1:]:
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                fields[key] = value
        if "CPV" in fields:
            entries.append(fields)
    return entries


def check_index(index: str, manifest: Manifest) -> None:
    """The release's Packages index must list what its signed manifest lists, no more.

    Portage fetches by the index and checks each file against it; holding
    the index to the manifest carries the manifest's signature over to it.
    """
    listed = {e.get("PATH", ""): e for e in index_entries(index)}
    for pkg in manifest.packages:
        found = listed.pop(pkg.path, None)
        if found is None:
            raise UpgradeError(
                f"the index of {manifest.version} lacks {pkg.cpv} ({pkg.path})", EXIT_UNTRUSTED
            )
        if found["CPV"] != pkg.cpv or found.get("SIZE") != str(pkg.size):
            raise UpgradeError(
                f"the index of {manifest.version} disagrees with its manifest about {pkg.path}",
                EXIT_UNTRUSTED,
            )
    if listed:
        extra = ", ".join(sorted(e["CPV"] for e in listed.values()))
        raise UpgradeError(
            f"the index of {manifest.version} lists packages its manifest lacks: {extra}", EXIT_UNTRUSTED
        )
