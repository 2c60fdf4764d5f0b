"""Build the release tarball: dist/build-swarm-<version>.tar.gz.

The tarball is what the ebuild's SRC_URI names: every file git tracks, under
one top directory ``build-swarm-<version>/``, plus ``console/vendor/`` (the
browser libraries ``make console`` copies from npm, which git ignores and an
ebuild cannot fetch). The ebuild builds the wheel from it, so the console
files reach the installed package as package data.

The tarball is reproducible: sorted entries, one timestamp (the commit's, or
SOURCE_DATE_EPOCH), owner root, modes 0644/0755, no gzip timestamp. The
overlay's Manifests are left out and do not count as a change, so
committing the Manifest that tools/manifest.py writes for a tarball does not
change the tarball a later build of that commit gives.

    python tools/dist.py --outdir dist        # a release: the tree must be clean
    python tools/dist.py --allow-dirty        # a development build of the working tree
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import os
import stat
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
VENDOR = Path("console/vendor")
# Written by `make console` once vendor/ is complete.
VENDOR_STAMP = ".built-stamp"
# packaging/ebuilds/<cat>/<pn>/Manifest: see the module docstring.
MANIFEST_DEPTH = len(Path("packaging/ebuilds/cat/pn/Manifest").parts)
MANIFEST_PATHSPEC = "packaging/ebuilds/*/*/Manifest"


class DistError(Exception):
    """The tarball cannot be built; the message says why."""


def project_version(root: Path = ROOT) -> str:
    with (root / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def _git(root: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise DistError("git is needed to list the project's files") from None
    if result.returncode != 0:
        raise DistError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _is_manifest(rel: Path) -> bool:
    parts = rel.parts
    return len(parts) == MANIFEST_DEPTH and parts[:2] == ("packaging", "ebuilds") and parts[-1] == "Manifest"


def _changed(root: Path) -> list[Path]:
    """Paths with uncommitted changes, untracked ones included."""
    fields = iter(_git(root, "status", "--porcelain", "-z", "--untracked-files=all").split("\0"))
    changed = []
    for entry in fields:
        if not entry:
            continue
        changed.append(Path(entry[3:]))
        if "R" in entry[:2] or "C" in entry[:2]:
            next(fields, None)  # the rename's or copy's source path
    return changed


def source_files(root: Path, *, allow_dirty: bool) -> list[Path]:
    """The files git tracks (with ``allow_dirty``, also untracked ones it does not ignore)."""
    if not allow_dirty:
        changed = [rel for rel in _changed(root) if not _is_manifest(rel)]
        if changed:
            raise DistError(
                f"the working tree has changes ({', '.join(map(str, changed[:3]))}"
                f"{' ...' if len(changed) > 3 else ''}): commit them first, "
                "or pass --allow-dirty for a development tarball"
            )
    args = ["ls-files", "-z", "--cached"]
    if allow_dirty:
        args += ["--others", "--exclude-standard"]
    names = {Path(name) for name in _git(root, *args).split("\0") if name}
    # A deleted file stays in the index until the deletion is committed.
    return sorted(rel for rel in names if (root / rel).is_symlink() or (root / rel).exists())


def vendor_files(root: Path) -> list[Path]:
    vendor = root / VENDOR
    if not (vendor / VENDOR_STAMP).is_file():
        raise DistError(f"{vendor} is missing or incomplete: run `make console` first")
    return sorted(p.relative_to(root) for p in vendor.iterdir() if p.is_file() and p.name != VENDOR_STAMP)


def source_date(root: Path) -> int:
    """The timestamp of every entry: SOURCE_DATE_EPOCH, else the time of the last
    commit that changed the tarball's content (committing a Manifest does not)."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    since = _git(root, "log", "-1", "--format=%ct", "--", ".", f":(exclude){MANIFEST_PATHSPEC}")
    return int(since.strip() or 0)


def _entry(root: Path, rel: Path, top: str, mtime: int) -> tuple[tarfile.TarInfo, bytes | None]:
    path = root / rel
    info = tarfile.TarInfo(f"{top}/{rel.as_posix()}")
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        info.mode = 0o777
        return info, None
    data = path.read_bytes()
    info.size = len(data)
    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    return info, data


def write_tarball(root: Path, files: Iterable[Path], out: Path, top: str, mtime: int) -> None:
    """Write ``files`` (relative to ``root``) as ``out``, a gzip'd tar under ``top/``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(top)
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        directory.mtime = mtime
        directory.uname = directory.gname = "root"
        tar.addfile(directory)
        for rel in sorted(set(files)):
            info, data = _entry(root, rel, top, mtime)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(buffer.getvalue())
    tmp.replace(out)


def build(root: Path, outdir: Path, *, allow_dirty: bool) -> Path:
    """Build the release tarball of the project at ``root`` into ``outdir``; returns its path."""
    version = project_version(root)
    top = f"build-swarm-{version}"
    files = [rel for rel in source_files(root, allow_dirty=allow_dirty) if not _is_manifest(rel)]
    files += vendor_files(root)
    out = outdir / f"{top}.tar.gz"
    write_tarball(root, files, out, top, source_date(root))
    log.info("wrote %s (%d files)", out, len(files))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dist.py",
        description="Build the release tarball build-swarm-<version>.tar.gz: git's files "
        "plus console/vendor/.",
    )
    parser.add_argument(
        "--outdir", type=Path, default=ROOT / "dist", help="where to write it (default: dist/)"
    )
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="build from a working tree with uncommitted changes (never for a release)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = build(ROOT, args.outdir, allow_dirty=args.allow_dirty)
    except DistError as exc:
        print(f"dist.py: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
