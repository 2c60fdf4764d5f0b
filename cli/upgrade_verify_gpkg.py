"""Portage's own check of fetched gpkgs, before any of them is merged.

``emerge --fetchonly`` checks each download against the Packages index
but leaves the signatures to the merge, one package at a time: a refused
third package would stop a run with two already merged. swarm-upgrade
runs this module in the client's Portage environment instead (``python -m
swarm.cli.upgrade_verify_gpkg FILE...``, FEATURES=binpkg-request-signature
set): Portage's gpkg verification, the one gpkg-sign and the merge use,
over every file, signatures and checksums of each part included. One line
per file on stdout (``ok PATH`` or ``refused PATH: why``); Portage's own
GnuPG report goes to stderr. Exit 0 when all verify, 1 when one does not,
2 when Portage cannot be imported here.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    files = sys.argv[1:] if argv is None else argv
    try:
        # Imported here: PORTAGE_OVERRIDE_EPREFIX and FEATURES are read at import.
        import portage
        from portage import gpkg
    except ImportError as exc:
        print(f"Portage's Python modules cannot be imported by {sys.executable}: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("NOCOLOR", "").lower() in ("1", "true", "yes"):
        portage.output.nocolor()
    settings: Any = portage.settings
    if "binpkg-request-signature" not in settings.features:
        print("refusing to check without FEATURES=binpkg-request-signature", file=sys.stderr)
        return 2
    refused = 0
    for path in files:
        try:
            gpkg.gpkg(settings, gpkg_file=path)._verify_binpkg()
        except Exception as exc:  # whatever Portage raises, the package is refused
            refused += 1
            print(f"refused {path}: {type(exc).__name__}: {exc}", flush=True)
        else:
            print(f"ok {path}", flush=True)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
