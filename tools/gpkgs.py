"""Small real gpkgs, fast: Portage's own gpkg code writes each one, with
one small file of its own, instead of emerge building it.

The metadata is copied from a package emerge really built (``--template``;
then stock Portage installs them on a client like any other, files
relocated to its prefix), or, without one, the least Portage reads from a
binary package (enough to stage, index, sign and release it; not to
install it). Run it in a prefix's environment (``PORTAGE_OVERRIDE_EPREFIX``):
with ``--inject`` the packages go into that prefix's PKGDIR, whose
``Packages`` index Portage rewrites; with ``--out DIR`` they are only
written there::

    PORTAGE_OVERRIDE_EPREFIX=/tmp/ctl python tools/gpkgs.py --inject --count 1000 \\
        --template leaf-data-1-1.gpkg.tar          # swarm-test/bench0000-1 ... bench0999-1
    PORTAGE_OVERRIDE_EPREFIX=/tmp/ctl python tools/gpkgs.py --out /tmp/pkgs swarm-test/leaf-hello-1

Prints one JSON line: the files written, seconds, bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CATEGORY = "swarm-test"
# What Portage reads of a binary package's metadata when it stages, indexes and signs it.
MINIMAL = {
    "EAPI": b"8\n",
    "SLOT": b"0\n",
    "KEYWORDS": b"amd64 arm64\n",
    "LICENSE": b"GPL-2\n",
    "IUSE": b"\n",
    "USE": b"\n",
    "DEFINED_PHASES": b"install\n",
    "repository": b"gentoo\n",
    "BUILD_ID": b"1\n",
}


def bench_name(index: int) -> str:
    """Package ``index`` of a bench set (a name Portage cannot read a version into)."""
    return f"bench{index:04d}"


def write(settings: Any, cpv: str, out_dir: Path, base: dict[str, bytes], eprefix: str) -> Path:
    """``cpv`` as ``out_dir/<pf>-1.gpkg.tar``, installing one small file."""
    from portage.gpkg import gpkg

    category, pf = cpv.split("/", 1)
    pn = pf.rsplit("-", 1)[0]
    with tempfile.TemporaryDirectory(prefix="gpkg-") as tmp:
        # Under the builder's prefix, as emerge lays files out.
        data = Path(tmp) / eprefix.lstrip("/") / "usr" / "share" / "swarm-bench"
        data.mkdir(parents=True)
        content = f"{cpv}\n".encode()
        (data / f"{pn}.txt").write_bytes(content)
        metadata = dict(base)
        metadata.update(
            {
                "CATEGORY": f"{category}\n".encode(),
                "PF": f"{pf}\n".encode(),
                "DESCRIPTION": f"Swarm test package {cpv}\n".encode(),
                "BUILD_TIME": f"{int(time.time())}\n".encode(),
                "SIZE": f"{len(content)}\n".encode(),
                "EPREFIX": f"{eprefix}\n".encode(),
            }
        )
        out = out_dir / f"{pf}-1.gpkg.tar"
        gpkg(settings, f"{pf}-1", str(out)).compress(tmp, metadata)
    return out


def make(cpvs: list[str], *, template: Path | None, out_dir: Path | None) -> dict[str, Any]:
    """Write (and without ``out_dir``, inject) the packages; figures."""
    import portage
    from portage.gpkg import gpkg

    settings = portage.settings
    if template is not None:
        base = dict(gpkg(settings, None, str(template)).get_metadata())
        for key in [k for k in base if k.endswith(".ebuild")]:
            del base[key]  # named after the template's PF; Portage does not need it to install
        eprefix = base.get("EPREFIX", b"").decode().strip()
    else:
        base, eprefix = dict(MINIMAL), settings["EPREFIX"]
    bintree = portage.db[settings["EROOT"]]["bintree"]
    started = time.monotonic()
    files: list[str] = []
    size = 0
    with tempfile.TemporaryDirectory(prefix="gpkgs-") as tmp:
        for cpv in cpvs:
            written = write(settings, cpv, out_dir or Path(tmp), base, eprefix)
            if out_dir is None:
                noise = io.StringIO()
                with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
                    injected = bintree.inject(cpv, current_pkg_path=str(written))
                if injected is None:
                    raise SystemExit(f"portage refused {cpv}: {noise.getvalue().strip()[:300]}")
                written = Path(bintree.getname(injected))
            files.append(str(written))
            size += written.stat().st_size
    return {"files": files, "seconds": time.monotonic() - started, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "cpvs", nargs="*", metavar="CPV", help="packages to write, e.g. swarm-test/leaf-hello-1"
    )
    parser.add_argument("--count", type=int, default=0, help=f"also {CATEGORY}/benchNNNN-VERSION, this many")
    parser.add_argument("--version", default="1", help="their version (default 1)")
    parser.add_argument("--first", type=int, default=0, help="index of the first (default 0)")
    parser.add_argument("--template", type=Path, help="a gpkg emerge built, whose metadata is copied")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--inject", action="store_true", help="into the prefix's PKGDIR and index")
    where.add_argument("--out", type=Path, help="only write them into this directory")
    ns = parser.parse_args()
    cpvs = list(ns.cpvs) + [
        f"{CATEGORY}/{bench_name(i)}-{ns.version}" for i in range(ns.first, ns.first + ns.count)
    ]
    out = sys.stdout
    sys.stdout = sys.stderr  # Portage prints; only our JSON line goes to stdout
    figures = make(cpvs, template=ns.template, out_dir=ns.out)
    out.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
