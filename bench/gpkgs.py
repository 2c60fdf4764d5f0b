"""Many small real gpkgs, fast: Portage's own gpkg code writes each one
from the metadata of a package emerge really built (tools/prefix.py's
overlay, swarm-test/leaf-data), renamed, with one small file of its own.

Run in a prefix's environment (``PORTAGE_OVERRIDE_EPREFIX``), it injects
them into that prefix's PKGDIR, whose ``Packages`` index Portage rewrites::

    PORTAGE_OVERRIDE_EPREFIX=/tmp/ctl python bench/gpkgs.py TEMPLATE.gpkg.tar \\
        --count 1000 --version 1 --first 0

Package i is ``swarm-test/benchNNNN-VERSION`` (SLOT 0). Stock Portage
installs them from a binhost like any other (no ebuild needed with
``--getbinpkgonly``). Prints one JSON line: how many, seconds, bytes.
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

CATEGORY = "swarm-test"


def name(index: int) -> str:
    return f"bench{index:04d}"


def make(template: Path, count: int, version: str, first: int) -> dict[str, float]:
    import portage
    from portage.gpkg import gpkg

    settings = portage.settings
    bintree = portage.db[settings["EROOT"]]["bintree"]
    base = gpkg(settings, None, str(template)).get_metadata()
    ebuild_key = next(k for k in base if k.endswith(".ebuild"))
    ebuild = base.pop(ebuild_key)
    # Files under the builder's prefix, as emerge lays them out (a client elsewhere relocates them).
    eprefix = base.get("EPREFIX", b"").decode().strip().lstrip("/")
    started = time.monotonic()
    written = 0
    with tempfile.TemporaryDirectory(prefix="gpkgs-") as tmp:
        work = Path(tmp)
        for index in range(first, first + count):
            pn = name(index)
            pf = f"{pn}-{version}"
            root = work / pf
            data = root / eprefix / "usr" / "share" / "swarm-bench"
            data.mkdir(parents=True)
            content = f"{CATEGORY}/{pf}\n".encode()
            (data / f"{pn}.txt").write_bytes(content)
            metadata = dict(base)
            metadata.update(
                {
                    "CATEGORY": f"{CATEGORY}\n".encode(),
                    "PF": f"{pf}\n".encode(),
                    "DESCRIPTION": f"Swarm bench package {index}\n".encode(),
                    "BUILD_TIME": f"{int(time.time())}\n".encode(),
                    "SIZE": f"{len(content)}\n".encode(),
                    f"{pf}.ebuild": ebuild,
                }
            )
            out = work / f"{pf}-1.gpkg.tar"
            gpkg(settings, f"{pf}-1", str(out)).compress(str(root), metadata)
            noise = io.StringIO()
            with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
                injected = bintree.inject(f"{CATEGORY}/{pf}", current_pkg_path=str(out))
            if injected is None:
                raise SystemExit(f"portage refused {CATEGORY}/{pf}: {noise.getvalue().strip()[:300]}")
            written += Path(bintree.getname(injected)).stat().st_size
    return {"count": count, "seconds": time.monotonic() - started, "bytes": written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path, help="a gpkg emerge built, whose metadata is copied")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--version", default="1", help="PV of every package (default 1)")
    parser.add_argument("--first", type=int, default=0, help="index of the first package (default 0)")
    ns = parser.parse_args()
    out = sys.stdout
    sys.stdout = sys.stderr  # Portage prints; only our JSON line goes to stdout
    figures = make(ns.template, ns.count, ns.version, ns.first)
    out.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
