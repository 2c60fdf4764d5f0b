"""A long-lived Portage process for the controller.

Portage is a large, blocking, global-state library configured by
environment variables read at import time; the controller keeps it in a
child process of its own and talks to it in JSON lines on stdin/stdout:

    {"id": 1, "op": "resolve", "atoms": ["swarm-test/top"]}
    -> {"id": 1, "ok": true, "packages": [{"cpv": "...", "deps": ["..."]}]}
    {"id": 2, "op": "inject", "cpv": "cat/pkg-1.0", "path": "/upload/pkg-1.0-1.gpkg.tar"}
    -> {"id": 2, "ok": true, "path": "/staging/cat/pkg/pkg-1.0-1.gpkg.tar"}
    -> {"id": 3, "ok": false, "kind": "invalid" | "notfound" | "error", "error": "why"}
    {"id": 4, "op": "staged"} -> {"id": 4, "ok": true, "cpvs": ["cat/pkg-1.0", ...]}

Run with PORTAGE_OVERRIDE_EPREFIX pointing at the controller's prefix,
whose repos and profile define the swarm's packages and whose PKGDIR is
the staging binhost.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any


class WorkerError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def resolve(atoms: list[str]) -> list[dict[str, Any]]:
    from _emerge.actions import load_emerge_config
    from _emerge.create_depgraph_params import create_depgraph_params
    from _emerge.depgraph import backtrack_depgraph
    from _emerge.Package import Package
    from _emerge.stdout_spinner import stdout_spinner
    from portage.dep import Atom
    from portage.exception import InvalidAtom

    for atom in atoms:
        try:
            Atom(atom, allow_wildcard=False, allow_repo=True)
        except InvalidAtom:
            if not atom.startswith("@"):
                raise WorkerError("invalid", f"not a package atom: {atom!r}") from None
    config = load_emerge_config()
    options = {"--emptytree": True, "--pretend": True, "--quiet": True}
    params = create_depgraph_params(options, "")
    spinner = stdout_spinner()
    spinner.mode = spinner.QUIET
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
        ok, graph, _ = backtrack_depgraph(
            config.target_config.settings, config.trees, options, params, "", atoms, spinner
        )
        if not ok:
            graph.display_problems()
    if not ok:
        text = noise.getvalue()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if "there are no ebuilds to satisfy" in text or "emerge: there are no" in text:
            raise WorkerError(
                "notfound",
                next((ln for ln in lines if "no ebuilds" in ln), lines[-1] if lines else "no such package"),
            )
        raise WorkerError("invalid", " ".join(lines[-3:])[:500] or "portage could not resolve the atoms")
    digraph = graph._dynamic_config.digraph
    merged = [
        n for n in digraph if isinstance(n, Package) and n.operation == "merge" and n.type_name == "ebuild"
    ]
    keep = set(merged)
    packages = []
    for node in merged:
        deps = sorted(
            {str(child.cpv) for child in digraph.child_nodes(node) if child in keep and child is not node}
        )
        packages.append({"cpv": str(node.cpv), "deps": deps})
    return _break_cycles(packages)


def _break_cycles(packages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Portage graphs may hold runtime cycles; the build order needs a DAG."""
    deps = {p["cpv"]: list(p["deps"]) for p in packages}
    state: dict[str, int] = {}
    for root in deps:
        stack = [(root, iter(deps[root]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                deps[node].remove(child)  # back edge: drop it
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(list(deps[child]))))
    return [{"cpv": cpv, "deps": sorted(d)} for cpv, d in deps.items()]


def inject(cpv: str, path: str) -> str:
    import portage
    from portage.exception import PortagePackageException, SignatureException
    from portage.gpkg import gpkg

    settings = portage.settings
    bintree = portage.db[settings["EROOT"]]["bintree"]
    try:
        metadata = gpkg(settings, None, path).get_metadata()
    except (PortagePackageException, SignatureException, OSError, ValueError) as exc:
        raise WorkerError("invalid", f"not a valid binary package: {exc}") from None
    if not isinstance(metadata, dict):
        raise WorkerError("invalid", "not a valid binary package: no metadata")

    def field(key: str) -> str:
        value = metadata.get(key, b"")
        return (value.decode(errors="replace") if isinstance(value, bytes) else str(value)).strip()

    found = f"{field('CATEGORY')}/{field('PF')}"
    if found != cpv:
        raise WorkerError("invalid", f"the package is {found}, not {cpv}")
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
        result = bintree.inject(cpv, current_pkg_path=path)
    if result is None:
        raise WorkerError("invalid", noise.getvalue().strip()[:500] or "portage refused the package")
    return str(bintree.getname(result))


def staged() -> list[str]:
    import portage

    bintree = portage.db[portage.settings["EROOT"]]["bintree"]
    bintree.populate()
    return sorted({str(cpv) for cpv in bintree.dbapi.cpv_all()})


def main() -> None:
    out = sys.stdout
    # Portage prints; only our replies may reach the protocol channel.
    sys.stdout = sys.stderr
    from portage.output import nocolor

    nocolor()
    for line in sys.stdin:
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "resolve":
                reply: dict[str, Any] = {"ok": True, "packages": resolve(list(request["atoms"]))}
            elif op == "inject":
                reply = {"ok": True, "path": inject(str(request["cpv"]), str(request["path"]))}
            elif op == "staged":
                reply = {"ok": True, "cpvs": staged()}
            elif op == "info":
                import portage

                reply = {
                    "ok": True,
                    "pkgdir": portage.settings["PKGDIR"],
                    "eprefix": portage.settings["EPREFIX"],
                }
            else:
                reply = {"ok": False, "kind": "error", "error": f"unknown op {op!r}"}
        except WorkerError as exc:
            reply = {"ok": False, "kind": exc.kind, "error": str(exc)}
        except Exception as exc:  # a bad request must not end the worker
            reply = {"ok": False, "kind": "error", "error": f"{type(exc).__name__}: {exc}"}
        reply["id"] = request.get("id")
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
