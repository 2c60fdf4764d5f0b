"""How a drone runs a test build without installing it.

A regular build runs the configured emerge command on ``=CPV``: it builds
the package, merges it into the drone's root and writes its binary
package. A test build must leave the drone's installed packages as they
were (a token holder's package merged on a build drone would leak into
later regular builds: an automagic dependency, a changed library), so it
runs the same command in three steps, each with its own arguments::

    check   CMD --pretend --onlydeps --onlydeps-with-rdeps=n --usepkg-exclude=CAT/PN =CPV
    deps    CMD --onlydeps --onlydeps-with-rdeps=n --usepkg-exclude=CAT/PN =CPV
    build   CMD --buildpkgonly --usepkg-exclude=CAT/PN =CPV

``check`` asks emerge which build-time dependencies are missing on the
drone (``--onlydeps-with-rdeps=n``: the ones needed to build it, not to
run it; ``--buildpkgonly`` asks for no more). Each row of its merge list
says where emerge would take the package from: ``[binary ...]`` from the
binhosts of a regular build (staging), ``[ebuild ...]`` from source. A
dependency from source would be built for a token holder's request and
merged into the drone's root, so the test build is refused, naming the
dependencies that are not in staging (``refusal``): they come from
staging or not at all. ``deps`` installs the binaries, as a regular build
of the package would have (it runs only when ``check`` listed any).
``build`` builds the package and writes its binary package without
merging it (Portage's ``--buildpkgonly``, which requires the build-time
dependencies installed: the two steps before see to that).

The steps share one build log; the agent writes a line of its own
(``note``) before each. What emerge prints is parsed only for the check's
merge list (``merge_row``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from swarm.printable import printable

# A row of emerge's merge list: "[binary  N     ] cat/pkg-1-1 ", "[ebuild  N     ] cat/pkg-1::repo  USE=...".
_ROW = re.compile(r"^\[(?P<kind>ebuild|binary)\s[^\]]*\]\s+(?P<cpv>[^\s:]+)")
ONLYDEPS = ("--onlydeps", "--onlydeps-with-rdeps=n")
# The exit code a test build refused by its check ends with: emerge itself succeeded.
REFUSED_EXIT = 1


class Stage(enum.Enum):
    CHECK = "check"
    DEPS = "deps"
    BUILD = "build"


@dataclass(frozen=True, slots=True)
class Step:
    stage: Stage
    args: tuple[str, ...]  # after the configured command
    note: str  # written to the build log before the step runs ("" for none)


@dataclass(frozen=True, slots=True)
class MergeList:
    """The check's answer: what emerge would install, by where it comes from."""

    binary: tuple[str, ...] = ()
    source: tuple[str, ...] = ()


def build_steps(cpv: str, cpn: str, *, test_build: bool) -> tuple[Step, ...]:
    """What the build runs. A regular build: one emerge, which builds =CPV from
    source (even if a binary of it is on the binhost already: a retry; only
    its dependencies come as binaries) and merges it. A test build: the three
    steps above."""
    target = (f"--usepkg-exclude={cpn}", f"={cpv}")
    if not test_build:
        return (Step(Stage.BUILD, target, ""),)
    return (
        Step(
            Stage.CHECK,
            ("--pretend", *ONLYDEPS, *target),
            f">>> Test build of {cpv}: its build dependencies must be binary packages in staging"
            " (emerge --pretend --onlydeps)",
        ),
        Step(
            Stage.DEPS,
            (*ONLYDEPS, *target),
            f">>> Test build of {cpv}: installing its build dependencies from staging (emerge --onlydeps)",
        ),
        Step(
            Stage.BUILD,
            ("--buildpkgonly", *target),
            f">>> Test build of {cpv}: building its binary package without installing it"
            " (emerge --buildpkgonly)",
        ),
    )


def merge_row(line: str) -> tuple[str, str] | None:
    """("binary" or "ebuild", CPV as emerge shows it) of a merge list row, else None."""
    found = _ROW.match(printable(line).strip())
    return (found["kind"], found["cpv"]) if found else None


def merge_list(rows: Iterable[tuple[str, str]]) -> MergeList:
    binary = tuple(cpv for kind, cpv in rows if kind == "binary")
    source = tuple(cpv for kind, cpv in rows if kind == "ebuild")
    return MergeList(binary, source)


def refusal(source: tuple[str, ...]) -> str:
    """The build log's last line when dependencies would be built from source:
    the test build's failure, as the controller reads it (builds.failure_summary)."""
    which = (
        f"dependency {source[0]} is not" if len(source) == 1 else f"dependencies {', '.join(source)} are not"
    )
    return (
        f" * {which} in staging: a test build installs its dependencies only as binary packages"
        " from staging (a regular build of them puts them there)"
    )
