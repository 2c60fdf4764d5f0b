"""Write the overlay's thin Manifest for a release tarball.

The overlay uses thin Manifests (metadata/layout.conf ``thin-manifests =
true``), as Gentoo's own repository does: a package's Manifest lists only
its distfiles, one line each::

    DIST build-swarm-0.1.0.tar.gz 123456 BLAKE2B <hex> SHA512 <hex>

with the hashes layout.conf's ``manifest-hashes`` names (BLAKE2B is
BLAKE2b-512). Packages without distfiles (acct-user/build-swarm,
acct-group/build-swarm) have no Manifest.

Each distfile must be ``<P>.tar.gz`` for an ebuild ``<P>.ebuild`` of the
package (the ebuild's SRC_URI). Lines for other versions that still have an
ebuild are kept; lines for versions whose ebuild is gone are dropped.

    python tools/manifest.py dist/build-swarm-0.1.0.tar.gz
    python tools/manifest.py --repo /tmp/overlay-copy dist/build-swarm-0.1.0.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPO = ROOT / "packaging" / "ebuilds"
PACKAGE = "app-admin/build-swarm"
DISTFILE_SUFFIX = ".tar.gz"
# hashlib name of each Manifest hash, in the order Manifest lines carry them.
HASHES = {"BLAKE2B": "blake2b", "SHA512": "sha512"}
CHUNK = 1 << 20


class ManifestError(Exception):
    """The Manifest cannot be written; the message says why."""


@dataclass(frozen=True, slots=True)
class DistEntry:
    name: str
    size: int
    digests: tuple[tuple[str, str], ...]

    def line(self) -> str:
        hashes = " ".join(f"{kind} {value}" for kind, value in self.digests)
        return f"DIST {self.name} {self.size} {hashes}"


def dist_entry(path: Path) -> DistEntry:
    """The Manifest entry of one distfile: its size and digests."""
    hashers = {kind: hashlib.new(name) for kind, name in HASHES.items()}
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            size += len(chunk)
            for hasher in hashers.values():
                hasher.update(chunk)
    return DistEntry(path.name, size, tuple((kind, h.hexdigest()) for kind, h in hashers.items()))


def _layout_hashes(repo: Path) -> list[str] | None:
    layout = repo / "metadata" / "layout.conf"
    if not layout.is_file():
        return None
    for raw in layout.read_text().splitlines():
        key, sep, value = raw.partition("=")
        if sep and key.strip() == "manifest-hashes":
            return value.split()
    return None


def _existing(manifest: Path) -> dict[str, str]:
    """DIST lines of an existing Manifest by file name; any other kind of line is refused."""
    if not manifest.is_file():
        return {}
    lines: dict[str, str] = {}
    for raw in manifest.read_text().splitlines():
        fields = raw.split()
        if not fields:
            continue
        if fields[0] != "DIST" or len(fields) < 3:
            raise ManifestError(f"{manifest}: not a thin Manifest (line {raw[:40]!r}); remove it first")
        lines[fields[1]] = raw
    return lines


def write_manifest(repo: Path, package: str, distfiles: Iterable[Path]) -> Path:
    """Add (or refresh) ``distfiles`` in ``repo/package/Manifest``; returns the Manifest's path."""
    hashes = _layout_hashes(repo)
    if hashes is not None and hashes != list(HASHES):
        raise ManifestError(
            f"{repo}/metadata/layout.conf asks for manifest-hashes {' '.join(hashes)}; "
            f"this script writes {' '.join(HASHES)}"
        )
    pkgdir = repo / package
    pn = package.rpartition("/")[2]
    versions = {p.name.removesuffix(".ebuild") for p in pkgdir.glob(f"{pn}-*.ebuild")}
    if not versions:
        raise ManifestError(f"no ebuilds in {pkgdir}")
    manifest = pkgdir / "Manifest"
    lines = _existing(manifest)
    for path in distfiles:
        if not path.is_file():
            raise ManifestError(f"{path}: no such file")
        p = path.name.removesuffix(DISTFILE_SUFFIX)
        if not path.name.endswith(DISTFILE_SUFFIX) or p not in versions:
            raise ManifestError(
                f"{path.name} belongs to no ebuild in {pkgdir} (have: {', '.join(sorted(versions))}); "
                "copy the ebuild to the new version first"
            )
        lines[path.name] = dist_entry(path).line()
    kept = {name: line for name, line in lines.items() if name.removesuffix(DISTFILE_SUFFIX) in versions}
    tmp = manifest.with_name("Manifest.tmp")
    tmp.write_text("".join(kept[name] + "\n" for name in sorted(kept)))
    tmp.replace(manifest)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="manifest.py",
        description="Write the thin Manifest (DIST size BLAKE2B SHA512) of the overlay's package "
        "for release tarballs built by `make dist`.",
    )
    parser.add_argument("distfiles", nargs="+", type=Path, help="release tarballs, <P>.tar.gz")
    parser.add_argument(
        "--repo", type=Path, default=REPO, help=f"the overlay (default: {REPO.relative_to(ROOT)})"
    )
    parser.add_argument("--package", default=PACKAGE, help=f"CATEGORY/PN (default: {PACKAGE})")
    args = parser.parse_args(argv)
    try:
        manifest = write_manifest(args.repo, args.package, args.distfiles)
    except (ManifestError, OSError) as exc:
        print(f"manifest.py: {exc}", file=sys.stderr)
        return 1
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
