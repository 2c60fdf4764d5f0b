"""A drone's build command for tests about what the controller does with
builds (dispatch, failures counted, grounding, uploads), not about building:
the agent runs it as it runs emerge (``... --usepkg-exclude=CAT/PN =CPV``, in
the drone prefix's environment) and it writes a small real gpkg of CPV with
Portage's own gpkg code into the prefix's PKGDIR and index (tools/gpkgs.py),
about a quarter of an emerge run's CPU. The agent then finds, uploads and
reports it as after emerge. ``--version`` answers the agent's emerge check.
With GPKG_BUILD_GATE in its environment it writes nothing before that file
exists: a test holds the build there until it has set up what the upload
is to meet (a build that takes as long as the test needs, and no longer).

Real emerge builds on drones: tests/test_builds.py, test_build_failures.py,
test_session_faults.py, test_prefix.py.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

GATE_TIMEOUT = 300.0


def main(argv: list[str]) -> int:
    if "--version" in argv:
        print("gpkg-build: Portage's gpkg code, for tests (tests/support/gpkg_build.py)")
        return 0
    atoms = [arg[1:] for arg in argv if arg.startswith("=")]
    if len(atoms) != 1:
        print(f"gpkg-build: one =CATEGORY/PF to write, not {argv}", file=sys.stderr)
        return 2
    print(f">>> Emerging (1 of 1) {atoms[0]} (a gpkg written by Portage's gpkg code, not built)", flush=True)
    gate = os.environ.get("GPKG_BUILD_GATE")
    deadline = time.monotonic() + GATE_TIMEOUT
    while gate and not os.path.exists(gate):
        if time.monotonic() > deadline:
            print(f"gpkg-build: {gate} did not appear within {GATE_TIMEOUT:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    from gpkgs import make

    out, sys.stdout = sys.stdout, sys.stderr  # what Portage prints goes to the build log too
    try:
        figures = make(atoms, template=None, out_dir=None)
    finally:
        sys.stdout = out
    print(f">>> Completed (1 of 1) {atoms[0]}: {' '.join(figures['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
