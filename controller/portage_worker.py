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
    {"id": 5, "op": "sign", "resign": false, "signing": {"home": "/r/gnupg", "key": "FPR"}}
    -> {"id": 5, "ok": true, "signed": ["cat/pkg-1.0"]}
    {"id": 6, "op": "snapshot", "dest": "/r/releases/.v2026.12.05.partial"}
    -> {"id": 6, "ok": true, "packages": [{"cpv": ..., "path": ..., "slot": ..., "use": ..., "size": ...}]}
    {"id": 7, "op": "prefix_info"} -> {"id": 7, "ok": true, "profile": ..., "repository": {...}}
    {"id": 8, "op": "match", "atom": "app-misc/foo"} -> {"id": 8, "ok": true, "cpv": "app-misc/foo-1.0"}
    {"id": 9, "op": "reindex"} -> {"id": 9, "ok": true}
    {"id": 10, "op": "warm"} -> {"id": 10, "ok": true}  (reads what a first match would)

A request may carry ``signing`` (the release key's GnuPG home and
fingerprint): an ``inject`` then signs the package before it enters the
PKGDIR, and Portage verifies signed packages against that home.

Run with PORTAGE_OVERRIDE_EPREFIX pointing at the controller's prefix,
whose repos and profile define the swarm's packages and whose PKGDIR is
the staging binhost.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
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


def use_signing(signing: dict[str, str] | None) -> None:
    """Sign with the release key, and verify signed packages against its home.

    The home is the controller's own (0700), so verification runs as the
    controller's user instead of dropping to nobody as Portage does for
    root: the only signatures it checks here are the controller's."""
    if not signing:
        return
    import portage

    settings = portage.settings
    wanted = {
        "BINPKG_GPG_SIGNING_GPG_HOME": signing["home"],
        "BINPKG_GPG_SIGNING_KEY": signing["key"],
        "BINPKG_GPG_VERIFY_GPG_HOME": signing["home"],
        "GPG_VERIFY_USER_DROP": "",
        "GPG_VERIFY_GROUP_DROP": "",
    }
    if all(settings.get(key) == value for key, value in wanted.items()):
        return
    settings.unlock()
    try:
        for key, value in wanted.items():
            settings[key] = value
    finally:
        settings.lock()


def is_signed(path: str) -> bool:
    with tarfile.open(path) as tar:
        return any(name.endswith(".sig") for name in tar.getnames())


def sign_file(path: str, resign: bool = False) -> bool:
    """Sign a gpkg in place with Portage's own code (what gpkg-sign does);
    False if it is signed already, unless ``resign``: then its signatures
    are replaced (the key changed), their files' digests checked all the
    same."""
    import portage
    from portage.exception import PortagePackageException, SignatureException
    from portage.gpkg import gpkg

    signed = is_signed(path)
    if signed and not resign:
        return False
    noise = io.StringIO()
    try:
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            # An old key's signature may not verify here any more: it is replaced.
            package = gpkg(
                settings=portage.settings, gpkg_file=path, verify_signature=False if signed else None
            )
            package._verify_binpkg()
            package.update_signature()
    except (PortagePackageException, SignatureException) as exc:
        detail = noise.getvalue().strip().splitlines()
        raise WorkerError(
            "error", f"cannot sign {os.path.basename(path)}: {exc} {' '.join(detail[-2:])}"
        ) from None
    return True


def sign_staged(resign: bool = False) -> list[str]:
    """Sign every package of the PKGDIR that is not signed yet (every one
    with ``resign``), and rewrite
    their index entries (size, digests, mtime) under Portage's index lock,
    as ``emaint binhost --fix`` does for the entries it finds stale."""
    import portage
    from portage import locks

    bintree = portage.db[portage.settings["EROOT"]]["bintree"]
    bintree.populate()
    signed = [cpv for cpv in bintree.dbapi.cpv_all() if sign_file(bintree.getname(cpv), resign)]
    if not signed:
        return []
    lock = locks.lockfile(bintree._pkgindex_file, wantnewlockfile=1)
    try:
        pkgindex = bintree._load_pkgindex()
        fresh = {}
        for cpv in signed:
            entry = bintree._pkgindex_entry(cpv)
            bintree._eval_use_flags(cpv, entry)
            fresh[entry["PATH"]] = entry
        pkgindex.packages[:] = [fresh.get(d.get("PATH", ""), d) for d in pkgindex.packages]
        pkgindex.modified = True
        bintree._update_pkgindex_header(pkgindex.header)
        bintree._pkgindex_write(pkgindex)
        bintree.populated = False
    finally:
        locks.unlockfile(lock)
    return sorted(str(cpv) for cpv in signed)


def snapshot(dest: str) -> list[dict[str, Any]]:
    """Write ``dest``/Packages: staging's index entries of the newest
    version in each slot of each package (Portage's version order), in
    Portage's own format. The package files are the caller's to link."""
    import portage
    from portage.versions import best, cpv_getkey

    bintree = portage.db[portage.settings["EROOT"]]["bintree"]
    bintree.populate()
    pkgindex = bintree._load_pkgindex()
    pkgdir = bintree.pkgdir
    by_slot: dict[tuple[str, str], list[dict[str, str]]] = {}
    for entry in pkgindex.packages:
        if not os.path.isfile(os.path.join(pkgdir, entry.get("PATH", ""))):
            continue  # the index names a file that is gone: nothing to release
        slot = (entry.get("SLOT") or "0").split("/")[0]
        by_slot.setdefault((cpv_getkey(entry["CPV"]), slot), []).append(entry)
    chosen = []
    for entries in by_slot.values():
        newest = best([e["CPV"] for e in entries])
        same = [e for e in entries if e["CPV"] == newest]
        chosen.append(max(same, key=lambda e: int(e.get("BUILD_ID") or 0)))
    pkgindex.packages[:] = chosen
    pkgindex.modified = True
    with open(os.path.join(dest, "Packages"), "w", encoding="utf-8") as out:
        pkgindex.write(out)
        out.flush()
        os.fsync(out.fileno())
    return sorted(
        (
            {
                "cpv": str(e["CPV"]),
                "path": e["PATH"],
                "slot": e.get("SLOT") or "0",
                "use": e.get("USE", ""),
                "size": int(e.get("SIZE") or 0),
            }
            for e in chosen
        ),
        key=lambda p: p["cpv"],
    )


def _snapshot_time(location: str) -> float | None:
    from email.utils import parsedate_to_datetime

    for name in ("timestamp.chk", "timestamp.x"):
        try:
            with open(os.path.join(location, "metadata", name)) as fh:
                text = fh.readline().strip()
        except OSError:
            continue
        try:
            if name == "timestamp.x":
                return float(text.split()[0])
            return parsedate_to_datetime(text).timestamp()
        except (ValueError, IndexError, TypeError):
            continue
    return None


def _revision(location: str) -> str:
    # A synced tree names its commit; a git checkout knows its HEAD.
    try:
        with open(os.path.join(location, "metadata", "timestamp.commit")) as fh:
            words = fh.readline().split()
        if words:
            return words[0]
    except OSError:
        pass
    if not os.path.exists(os.path.join(location, ".git")):
        return ""
    try:
        done = subprocess.run(
            ["git", "-C", location, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def prefix_info() -> dict[str, Any]:
    """The profile and the main repository's name, revision and snapshot time."""
    import portage

    settings = portage.settings
    repo = settings.repositories.mainRepo()
    profile = os.path.realpath(settings.profile_path) if settings.profile_path else ""
    location = repo.location if repo is not None else ""
    profiles = os.path.join(os.path.realpath(location), "profiles") + os.sep if location else ""
    if profiles and profile.startswith(profiles):
        profile = profile[len(profiles) :]
    return {
        "profile": profile,
        "repository": {
            "name": repo.name if repo is not None else "",
            "revision": _revision(location) if location else "",
            "snapshot_time": _snapshot_time(location) if location else None,
        },
    }


def inject(cpv: str, path: str, signing: dict[str, str] | None = None) -> str:
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
    if signing:
        sign_file(path)  # before it is in the PKGDIR, so its index entry is the signed file's
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
        result = bintree.inject(cpv, current_pkg_path=path)
    if result is None:
        raise WorkerError("invalid", noise.getvalue().strip()[:500] or "portage refused the package")
    return str(bintree.getname(result))


def _answer(ask: Callable[[str], str], atom: str) -> dict[str, Any]:
    """One atom's answer of several asked at once: its own error, not the call's."""
    try:
        return {"cpv": ask(atom)}
    except WorkerError as exc:
        return {"kind": exc.kind, "error": str(exc)}


def match(atom: str) -> str:
    """The best visible version of a package atom in the tree (a test
    build's package), without resolving its dependencies."""
    import portage
    from portage.dep import Atom
    from portage.exception import InvalidAtom

    try:
        parsed = Atom(atom, allow_wildcard=False, allow_repo=False)
    except InvalidAtom:
        raise WorkerError("invalid", f"not a package atom: {atom!r}") from None
    if parsed.blocker or parsed.use or parsed.slot or parsed.repo:
        raise WorkerError("invalid", f"not a plain package atom: {atom!r}")
    portdb = portage.db[portage.settings["EROOT"]]["porttree"].dbapi
    best = portdb.xmatch("bestmatch-visible", parsed)
    if best:
        return str(best)
    if portdb.xmatch("match-all", parsed):
        raise WorkerError("invalid", f"{atom} is masked or not keyworded for the swarm's profile")
    raise WorkerError("notfound", f"no package {atom} in the swarm's tree")


def warm() -> None:
    """Read Portage's configuration and open the tree's database, as a first
    ``match`` would (under a second on a quiet machine, most of it the
    configuration; the tree's part is tens of milliseconds): the first test-build
    request of a burst need not wait for it."""
    import portage
    from portage.dep import Atom

    portdb = portage.db[portage.settings["EROOT"]]["porttree"].dbapi
    # A first query sets up what every later one uses (its event loop, the
    # repositories' caches); a package no tree has costs nothing more.
    portdb.xmatch("match-all", Atom("swarm-warm-up/none"))


def staged() -> list[str]:
    import portage

    bintree = portage.db[portage.settings["EROOT"]]["bintree"]
    bintree.populate()
    return sorted({str(cpv) for cpv in bintree.dbapi.cpv_all()})


def reindex() -> None:
    """Drop the index entries whose package file is gone (deleted by the
    test binhost's retention), under Portage's lock."""
    import portage
    from portage import locks

    bintree = portage.db[portage.settings["EROOT"]]["bintree"]
    lock = locks.lockfile(bintree._pkgindex_file, wantnewlockfile=1)
    try:
        pkgindex = bintree._load_pkgindex()
        kept = [
            e for e in pkgindex.packages if os.path.isfile(os.path.join(bintree.pkgdir, e.get("PATH", "")))
        ]
        if len(kept) != len(pkgindex.packages):
            pkgindex.packages[:] = kept
            pkgindex.modified = True
            bintree._update_pkgindex_header(pkgindex.header)
            bintree._pkgindex_write(pkgindex)
        bintree.populated = False
    finally:
        locks.unlockfile(lock)


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
            signing = request.get("signing")
            use_signing(signing)
            if op == "resolve":
                reply: dict[str, Any] = {"ok": True, "packages": resolve(list(request["atoms"]))}
            elif op == "inject":
                reply = {"ok": True, "path": inject(str(request["cpv"]), str(request["path"]), signing)}
            elif op == "match":
                reply = {"ok": True, "answers": [_answer(match, str(atom)) for atom in request["atoms"]]}
            elif op == "staged":
                reply = {"ok": True, "cpvs": staged()}
            elif op == "reindex":
                reindex()
                reply = {"ok": True}
            elif op == "sign":
                if not signing:
                    raise WorkerError("invalid", "sign needs the signing key")
                reply = {"ok": True, "signed": sign_staged(bool(request.get("resign")))}
            elif op == "snapshot":
                reply = {"ok": True, "packages": snapshot(str(request["dest"]))}
            elif op == "prefix_info":
                reply = {"ok": True, **prefix_info()}
            elif op == "warm":
                warm()
                reply = {"ok": True}
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
