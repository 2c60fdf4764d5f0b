"""Small real gpkgs written by Portage's own gpkg code (tools/gpkgs.py), for
tests about what the controller does with packages rather than about
building them: one Python start instead of an emerge run per package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import prefix as pfx

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpkgs.py"
# A drone's --emerge-command that writes the package instead of building it
# (support/gpkg_build.py): Fleet.add_agent(..., command=WRITE_COMMAND).
WRITE_COMMAND = f"{sys.executable} {Path(__file__).with_name('gpkg_build.py')}"


def _run(prefix: pfx.Prefix, *args: str) -> list[Path]:
    made = subprocess.run(
        [sys.executable, str(TOOL), *args],
        env=prefix.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    return [Path(f) for f in json.loads(made.stdout)["files"]]


def inject(prefix: pfx.Prefix, *cpvs: str) -> list[Path]:
    """``cpvs`` written into the prefix's PKGDIR, its ``Packages`` index rewritten by
    Portage (as emerge --buildpkgonly leaves them, without the build)."""
    return _run(prefix, "--inject", *cpvs)


def write(prefix: pfx.Prefix, out: Path, *cpvs: str, template: Path | None = None) -> list[Path]:
    """``cpvs`` written into ``out`` only. With ``template`` (a gpkg emerge built) they carry
    its metadata, so stock Portage installs them on a client; without, only the least
    metadata to stage, index, sign and release them."""
    out.mkdir(parents=True, exist_ok=True)
    extra = ["--template", str(template)] if template is not None else []
    return _run(prefix, "--out", str(out), *extra, *cpvs)
