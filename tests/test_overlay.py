"""The Gentoo overlay in packaging/ebuilds, checked the way a Gentoo host would.

The release tarball is built once for the module by tools/dist.py (what
``make dist`` runs, from the working tree) and its Manifest written by
tools/manifest.py. Then, with real tools from PyPI:

- pkgcheck scans the overlay offline (in a network namespace of its own)
  and finds no error-level result;
- Portage's ``ebuild ... fetch`` in a Gentoo prefix accepts the tarball
  against the Manifest and refuses a tampered one; ``ebuild ... install
  postinst`` shows what the ebuild installs and tells the admin;
- a wheel built from the unpacked tarball (as the ebuild builds it)
  carries the console's npm libraries;
- the ebuild's USE flags and RDEPEND, as pkgcore evaluates them, follow
  pyproject.toml's dependency groups.

Stand-ins: the overlay's layout.conf says ``masters = gentoo``, and there is
no Gentoo repository here. So the scanned repository is a copy of the
overlay with ``masters =`` plus tests/fixtures/gentoo-standins/ (see its
README.md): small eclasses in place of Gentoo's distutils-r1, python-r1,
acct-user and acct-group that give the ebuilds the same metadata (USE
flags, PYTHON_USEDEP, PYTHON_DEPS, REQUIRED_USE, dependencies on the
groups) and build nothing; one-line ebuilds for the dependencies at
pyproject's lowest versions; a profile with PYTHON_TARGETS; and the
architectures, base profiles and GPL-2 of the test overlay
(tests/fixtures/overlay). The overlay's own files are used as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import dist
import manifest
import pytest
from packaging.requirements import Requirement
from portage.dep import Atom, use_reduce
from prefix import PrefixConfig, Role, create_prefix, find_tool

from swarm.agent.config import AgentConfig
from swarm.config import resolve

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "packaging" / "ebuilds"
STANDINS = ROOT / "tests" / "fixtures" / "gentoo-standins"
TEST_OVERLAY = ROOT / "tests" / "fixtures" / "overlay"
PACKAGE = "app-admin/build-swarm"
PROFILE = "build-swarm-test/amd64"
VERSION = dist.project_version()
P = f"build-swarm-{VERSION}"
EBUILD = OVERLAY / PACKAGE / f"{P}.ebuild"
TOOL_TIMEOUT = 120.0

# pyproject.toml's distribution names -> (Gentoo package, slot).
GENTOO_NAMES = {
    "grpcio": ("dev-python/grpcio", None),
    "protobuf": ("dev-python/protobuf", None),
    "psutil": ("dev-python/psutil", None),
    "cryptography": ("dev-python/cryptography", None),
    "aiohttp": ("dev-python/aiohttp", None),
    "peewee": ("dev-python/peewee", None),
    "prometheus-client": ("dev-python/prometheus-client", None),
    "uvloop": ("dev-python/uvloop", None),
    "psycopg2-binary": ("dev-python/psycopg", "2"),
}
# The USE flag of each optional-dependency group of pyproject.toml, and the
# flags REQUIRED_USE asks for beside it.
GROUP_FLAGS = {"controller": ("controller", []), "postgres": ("postgres", ["controller"]), "cli": ("cli", [])}
# Extras that are not installed features (no USE flag).
DEVELOPMENT_EXTRAS = {"dev"}
# pyproject specifier operator -> Gentoo atom operator.
OPERATORS = {">=": ">=", "<": "<", "==": "=", "<=": "<=", ">": ">"}

pytestmark = pytest.mark.timeout(300)


def assemble_repo(dest: Path) -> Path:
    """A standalone copy of the overlay that pkgcheck and Portage can read (see the module docstring)."""
    shutil.copytree(OVERLAY, dest, ignore=shutil.ignore_patterns("Manifest"))
    for name in ("arch.list", "license_groups"):
        shutil.copy(TEST_OVERLAY / "profiles" / name, dest / "profiles" / name)
    shutil.copytree(TEST_OVERLAY / "profiles" / "swarm", dest / "profiles" / "swarm")
    shutil.copytree(TEST_OVERLAY / "licenses", dest / "licenses")
    shutil.copytree(STANDINS, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    categories = set((dest / "profiles" / "categories").read_text().split())
    categories |= {ebuild.parent.parent.name for ebuild in dest.glob("*/*/*.ebuild")}
    (dest / "profiles" / "categories").write_text("".join(f"{c}\n" for c in sorted(categories)))
    layout = dest / "metadata" / "layout.conf"
    text = layout.read_text()
    assert re.search(r"(?m)^masters = gentoo$", text), "the overlay is meant to build on Gentoo"
    text = re.sub(r"(?m)^masters = .*$", "masters =", text)
    # No metadata cache in the copy: pkgcore and Portage source the ebuilds.
    layout.write_text(re.sub(r"(?m)^cache-formats = .*$", "cache-formats =", text))
    return dest


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release tarball of the working tree, as `make dist` builds it."""
    try:
        return dist.build(ROOT, tmp_path_factory.mktemp("dist"), allow_dirty=True)
    except dist.DistError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tarball: Path) -> Path:
    """The assembled repository with the Manifest tools/manifest.py writes for the tarball."""
    dest = assemble_repo(tmp_path_factory.mktemp("repo") / "build-swarm")
    manifest.write_manifest(dest, PACKAGE, [tarball])
    return dest


def pkgcheck(repo: Path, cache: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    """pkgcheck scan (of the whole repository without targets) with no network:
    it runs in a network namespace of its own, which has no interfaces."""
    argv = ["unshare", "--net", str(find_tool("pkgcheck")), "scan", "--config", "no"]
    argv += ["--cache-dir", str(cache), "--exit", "error", "-r", str(repo), *targets]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd="/")
    print(f"pkgcheck scan {repo.name}: exit {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def test_pkgcheck_finds_no_error(repo: Path, tmp_path: Path) -> None:
    result = pkgcheck(repo, tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    # The same scan without the Manifest fails: the scan did look at the package.
    bare = tmp_path / "bare"
    shutil.copytree(repo, bare)
    (bare / PACKAGE / "Manifest").unlink()
    result = pkgcheck(bare, tmp_path / "cache", PACKAGE)
    assert result.returncode != 0
    assert "MissingManifest" in result.stdout


def test_manifest_lists_the_tarball_as_gentoo_does(repo: Path, tarball: Path) -> None:
    data = tarball.read_bytes()
    line = (repo / PACKAGE / "Manifest").read_text()
    assert line == (
        f"DIST {P}.tar.gz {len(data)} BLAKE2B {hashlib.blake2b(data).hexdigest()} "
        f"SHA512 {hashlib.sha512(data).hexdigest()}\n"
    )
    # Thin Manifests: packages without distfiles have none.
    assert not (repo / "acct-user" / "build-swarm" / "Manifest").exists()
    assert not (repo / "acct-group" / "build-swarm" / "Manifest").exists()


def run_ebuild(
    repo: Path, root: Path, distfile: Path, *phases: str, use: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Portage's ``ebuild <ebuild> PHASE...`` in a fresh prefix with ``distfile`` already in
    DISTDIR. Downloading always fails: nothing leaves the machine, and a file that fails
    verification cannot be replaced."""
    prefix = create_prefix(PrefixConfig(root=root, role=Role.CONTROLLER, repo=repo, profile=PROFILE))
    shutil.copy(distfile, prefix.distdir / f"{P}.tar.gz")
    # Portage from PyPI unpacks with `gtar`, the name GNU tar has on Gentoo Prefix.
    tools = root / "tools"
    tools.mkdir()
    tar = shutil.which("tar")
    assert tar is not None
    (tools / "gtar").symlink_to(tar)
    no_download = 'false "${URI}" "${DISTDIR}/${FILE}"'
    env = prefix.env({"FETCHCOMMAND": no_download, "RESUMECOMMAND": no_download})
    env["PATH"] = f"{tools}:{env['PATH']}"
    if use is not None:
        env["USE"] = use
    ebuild = repo / PACKAGE / f"{P}.ebuild"
    argv = [sys.executable, str(find_tool("ebuild")), str(ebuild), *phases]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    print(f"ebuild {' '.join(phases)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def test_portage_verifies_the_tarball_against_the_manifest(repo: Path, tarball: Path, tmp_path: Path) -> None:
    result = run_ebuild(repo, tmp_path / "good", tarball, "fetch")
    assert result.returncode == 0
    assert re.search(rf"{re.escape(P)}\.tar\.gz BLAKE2B SHA512 size .*\[ ok \]", result.stdout)

    # One flipped byte, same size: Portage refuses it and moves it aside.
    tampered = bytearray(tarball.read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    bad = tmp_path / "tampered.tar.gz"
    bad.write_bytes(bytes(tampered))
    result = run_ebuild(repo, tmp_path / "bad", bad, "fetch")
    assert result.returncode != 0
    assert "Failed on BLAKE2B verification" in result.stdout + result.stderr
    distdir = tmp_path / "bad" / "var" / "cache" / "distfiles"
    assert not (distdir / f"{P}.tar.gz").exists()
    assert list(distdir.glob(f"{P}.tar.gz._checksum_failure_*"))


def test_ebuild_installs_the_agent_service_and_its_config(repo: Path, tarball: Path, tmp_path: Path) -> None:
    # The stand-in distutils-r1 installs no wheel (see gentoo-standins/README.md):
    # what is checked here is what the ebuild's own python_install_all installs.
    # USE=controller is left out: fowners needs the build-swarm account on this host.
    root = tmp_path / "prefix"
    result = run_ebuild(repo, root, tarball, "clean", "install", "postinst", use="agent cli -controller")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    image = root / "var" / "tmp" / "portage" / PACKAGE.split("/")[0] / P / "image" / str(root).lstrip("/")
    installed = sorted(str(p.relative_to(image)) for p in image.rglob("*") if not p.is_dir())
    assert installed == [
        "etc/build-swarm/agent.toml",
        "etc/conf.d/swarm-agent",
        "etc/init.d/swarm-agent",
        "var/lib/build-swarm/agent/.keep_app-admin_build-swarm-0",
    ]
    shipped = OVERLAY / PACKAGE / "files"
    assert (image / "etc/build-swarm/agent.toml").read_bytes() == (shipped / "agent.toml").read_bytes()
    assert (image / "etc/init.d/swarm-agent").read_bytes() == (shipped / "swarm-agent.initd").read_bytes()
    assert (image / "etc/init.d/swarm-agent").stat().st_mode & 0o777 == 0o755
    assert (image / "var/lib/build-swarm/agent").stat().st_mode & 0o777 == 0o700
    # pkg_postinst: what to do next on a drone that is not enrolled yet.
    for step in (
        "/etc/build-swarm/agent.toml",
        "swarm-agent enroll --token",
        "rc-update add swarm-agent default",
    ):
        assert step in result.stdout + result.stderr, step

    result = run_ebuild(repo, tmp_path / "controller", tarball, "postinst", use="-agent controller")
    assert result.returncode == 0
    told = result.stdout + result.stderr
    for what in (
        "rc-update add swarm-controller",
        "/var/lib/build-swarm/admin.key",
        "8094",
        "8095",
        "8100",
        "8093",
    ):
        assert what in told, what
    assert "swarm-agent enroll" not in told

    # A machine that only follows releases: told how to trust the swarm and upgrade.
    result = run_ebuild(repo, tmp_path / "client", tarball, "postinst", use="-agent client -controller")
    assert result.returncode == 0
    told = result.stdout + result.stderr
    assert "swarm-upgrade trust" in told and "swarm-upgrade apply" in told
    assert "swarm-agent enroll" not in told and "swarm-controller" not in told


def test_tarball_is_reproducible_and_holds_the_console_libraries(tarball: Path, tmp_path: Path) -> None:
    again = dist.build(ROOT, tmp_path / "again", allow_dirty=True)
    assert again.read_bytes() == tarball.read_bytes()
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert {name.split("/")[0] for name in names} == {P}
    vendor = {Path(n).name for n in names if n.startswith(f"{P}/console/vendor/")}
    built = {p.name for p in (ROOT / "console" / "vendor").iterdir() if p.name != dist.VENDOR_STAMP}
    assert vendor == built and "xterm.mjs" in vendor
    assert f"{P}/pyproject.toml" in names
    assert f"{P}/packaging/ebuilds/{PACKAGE}/files/agent.toml" in names
    assert not [n for n in names if n.endswith("/Manifest")]


def test_wheel_built_from_the_tarball_carries_the_console(tarball: Path, tmp_path: Path) -> None:
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path, filter="data")
    source = tmp_path / P
    # What the ebuild does (DISTUTILS_USE_PEP517=setuptools): the PEP 517 backend, no isolation.
    code = "import sys; from setuptools.build_meta import build_wheel; print(build_wheel(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "wheel")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    wheel = tmp_path / "wheel" / result.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    vendor = {n.rpartition("/")[2] for n in names if n.startswith("swarm/console/vendor/")}
    assert {"xterm.mjs", "xterm.css", "addon-fit.mjs", "xterm.LICENSE", "addon-fit.LICENSE"} <= vendor
    assert {"swarm/console/app/index.html", "swarm/console/public/index.html"} <= names
    # Every page, module and stylesheet the console serves (a new subfolder needs its package-data glob).
    console = source / "console"
    served = {
        f"swarm/console/{path.relative_to(console)}"
        for path in console.rglob("*")
        if path.suffix in {".html", ".js", ".css", ".svg"} and "vendor" not in path.relative_to(console).parts
    }
    assert "swarm/console/app/pages/topology/layout.js" in served
    assert served <= names, sorted(served - names)
    assert "swarm/agent/main.py" in names and "swarm/v1/__init__.py" in names


def pquery(repo: Path, attr: str) -> str:
    """An ebuild attribute as pkgcore reads it (eclasses applied, variables expanded)."""
    argv = [str(find_tool("pquery")), "--repo", str(repo), "--raw", "--unfiltered", f"={PACKAGE}-{VERSION}"]
    result = subprocess.run(
        [*argv, "--one-attr", attr], capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# Python tools the installed program runs, not packages it imports: pyproject.toml does not name
# them. An agent installs the agent payloads it is sent with `python -m pip`, and builds an sdist
# with setuptools (agent/selfupdate.py).
TOOLS = {"agent": {"dev-python/pip", "dev-python/setuptools"}}


def python_atoms(rdepend: str, use: list[str]) -> set[str]:
    """The dev-python/* dependencies with ``use`` enabled, as cat/pn-version:slot with operator
    (the TOOLS left out)."""
    atoms = use_reduce(rdepend, uselist=use, flat=True, token_class=Atom)
    tools = set().union(*TOOLS.values())
    return {
        f"{a.operator or ''}{a.cp}{'-' + a.version if a.version else ''}{':' + a.slot if a.slot else ''}"
        for a in atoms
        if a.cp.startswith("dev-python/") and a.cp not in tools
    }


def tool_atoms(rdepend: str, use: list[str]) -> set[str]:
    return {a.cp for a in use_reduce(rdepend, uselist=use, flat=True, token_class=Atom)} & set().union(
        *TOOLS.values()
    )


def expected_atoms(requirements: list[str]) -> set[str]:
    atoms = set()
    for text in requirements:
        req = Requirement(text)
        assert req.name in GENTOO_NAMES, f"{req.name}: add its Gentoo package to GENTOO_NAMES and the ebuild"
        cp, slot = GENTOO_NAMES[req.name]
        suffix = f":{slot}" if slot else ""
        specs = list(req.specifier)
        assert specs, f"{text}: the ebuild needs a lower bound to copy"
        for spec in specs:
            atoms.add(f"{OPERATORS[spec.operator]}{cp}-{spec.version}{suffix}")
    return atoms


@pytest.fixture(scope="module")
def ebuild_metadata(repo: Path) -> dict[str, str]:
    return {attr: pquery(repo, attr) for attr in ("rdepend", "iuse")}


def test_ebuild_use_flags_and_dependencies_follow_pyproject(ebuild_metadata: dict[str, str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k not in DEVELOPMENT_EXTRAS}
    flags = {flag.lstrip("+-") for flag in ebuild_metadata["iuse"].split()}
    assert set(extras) == set(GROUP_FLAGS), "a new extra in pyproject.toml needs a USE flag in the ebuild"
    # agent and client choose what the machine is; they need no Python package of their own.
    assert {f for f in flags if not f.startswith("python_targets_")} == {"agent", "client", *extras}

    rdepend = ebuild_metadata["rdepend"]
    base = python_atoms(rdepend, [])
    assert base == expected_atoms(project["dependencies"])
    for extra, requirements in extras.items():
        flag, needed = GROUP_FLAGS[extra]
        added = python_atoms(rdepend, [flag, *needed]) - python_atoms(rdepend, needed)
        assert added == expected_atoms(requirements), extra
    everything = python_atoms(rdepend, sorted(flags))
    wanted = expected_atoms(project["dependencies"]).union(*(expected_atoms(r) for r in extras.values()))
    assert everything == wanted, "the ebuild depends on a Python package pyproject.toml does not name"
    # The agent alone installs no controller dependency; nor does a client.
    assert python_atoms(rdepend, ["agent"]) == base
    assert python_atoms(rdepend, ["client"]) == base
    for flag, tools in TOOLS.items():
        assert tool_atoms(rdepend, [flag]) == tools, flag
    assert tool_atoms(rdepend, ["client", "controller"]) == set()


def load_agent_config(path: Path) -> AgentConfig:
    """The agent's config from ``path`` alone: no environment, no flags."""
    return resolve(
        AgentConfig,
        argparse.Namespace(),
        env_prefix="SWARM_AGENT_",
        default_path=None,
        explicit_path=path,
        environ={},
    )


def _agent_toml_keys(text: str) -> dict[str, str]:
    """The ``#key = value`` lines of agent.toml, uncommented."""
    return {m[1]: m[0].lstrip("#") for m in re.finditer(r"(?m)^#(\w+) = .*$", text)}


def test_default_agent_toml_applies_the_builtin_defaults(tmp_path: Path) -> None:
    shipped = OVERLAY / PACKAGE / "files" / "agent.toml"
    text = shipped.read_text()
    assert re.search(r'insinto /etc/build-swarm\n\s*doins "\$\{FILESDIR\}"/agent\.toml\n', EBUILD.read_text())
    # As installed, every key is commented out: the agent's built-in defaults apply.
    assert tomllib.loads(text) == {}
    assert load_agent_config(shipped) == AgentConfig()
    keys = _agent_toml_keys(text)
    fields = AgentConfig.__dataclass_fields__
    assert set(keys) == set(fields), "agent.toml lists every agent option, and only those"
    # Uncommented, each line is valid and shows the built-in default (or an
    # example where the default is empty: derived at run time).
    uncommented = tmp_path / "agent.toml"
    uncommented.write_text("\n".join(keys.values()) + "\n")
    values = tomllib.loads(uncommented.read_text())
    load_agent_config(uncommented)
    defaults = AgentConfig()
    for key, value in values.items():
        default = getattr(defaults, key)
        if default not in ("", None):
            shown = str(default) if isinstance(default, Path) else default
            assert value == shown, f"agent.toml shows {key} = {value!r}, the default is {default!r}"
    # Each key (or a run of related keys) has a comment above it.
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if re.match(r"#\w+ = ", line):
            above = number - 1
            while re.match(r"#\w+ = ", lines[above]):
                above -= 1
            assert lines[above].startswith("# "), f"{line}: no comment says what it is"


def test_manifest_tool_refuses_a_tarball_without_an_ebuild(repo: Path, tmp_path: Path) -> None:
    stray = tmp_path / "build-swarm-99.0.tar.gz"
    stray.write_bytes(b"not a release")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "manifest.py"), "--repo", str(repo), str(stray)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "belongs to no ebuild" in result.stderr
    assert "build-swarm-99.0" not in (repo / PACKAGE / "Manifest").read_text()


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]


@pytest.fixture
def git_project(tmp_path: Path) -> Path:
    """A tiny project under git with a built console/vendor/, to run tools/dist.py on."""
    root = tmp_path / "project"
    (root / "console" / "vendor").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "build-swarm"\nversion = "9.1"\n')
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "console" / "vendor" / "xterm.mjs").write_text("export {}\n")
    (root / "console" / "vendor" / dist.VENDOR_STAMP).touch()
    (root / ".gitignore").write_text("/console/vendor/\n")
    subprocess.run([*GIT, "init", "-q", str(root)], check=True, timeout=30)
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True, timeout=30)
    early = {
        **os.environ,
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    }
    subprocess.run([*GIT, "commit", "-q", "-m", "init"], cwd=root, check=True, timeout=30, env=early)
    return root


def test_dist_refuses_an_uncommitted_tree_or_a_missing_console(git_project: Path, tmp_path: Path) -> None:
    out = dist.build(git_project, tmp_path / "out", allow_dirty=False)
    assert out.name == "build-swarm-9.1.tar.gz"
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {
        "build-swarm-9.1",
        "build-swarm-9.1/.gitignore",
        "build-swarm-9.1/pyproject.toml",
        "build-swarm-9.1/run.sh",
        "build-swarm-9.1/console/vendor/xterm.mjs",
    }
    assert members["build-swarm-9.1/run.sh"].mode == 0o755
    assert members["build-swarm-9.1/pyproject.toml"].mode == 0o644
    # The release procedure: the Manifest written for the tarball neither makes
    # the tree dirty nor, once committed (later), changes the tarball.
    manifest_dir = git_project / "packaging" / "ebuilds" / "app-admin" / "build-swarm"
    manifest_dir.mkdir(parents=True)
    (manifest_dir / "Manifest").write_text("DIST x 1\n")
    assert dist.build(git_project, tmp_path / "again", allow_dirty=False).read_bytes() == out.read_bytes()
    later = {
        **os.environ,
        "GIT_COMMITTER_DATE": "2030-01-01T00:00:00Z",
        "GIT_AUTHOR_DATE": "2030-01-01T00:00:00Z",
    }
    subprocess.run([*GIT, "add", "-A"], cwd=git_project, check=True, timeout=30)
    subprocess.run(
        [*GIT, "commit", "-q", "-m", "Manifest"], cwd=git_project, check=True, timeout=30, env=later
    )
    assert dist.build(git_project, tmp_path / "tagged", allow_dirty=False).read_bytes() == out.read_bytes()

    (git_project / "run.sh").write_text("#!/bin/sh\nexit 1\n")
    with pytest.raises(dist.DistError, match=r"changes \(run.sh\).*--allow-dirty"):
        dist.build(git_project, tmp_path / "out", allow_dirty=False)
    dirty = dist.build(git_project, tmp_path / "dirty", allow_dirty=True)
    with tarfile.open(dirty) as tar:
        extracted = tar.extractfile("build-swarm-9.1/run.sh")
        assert extracted is not None and extracted.read().endswith(b"exit 1\n")

    (git_project / "console" / "vendor" / dist.VENDOR_STAMP).unlink()
    with pytest.raises(dist.DistError, match="make console"):
        dist.build(git_project, tmp_path / "out", allow_dirty=True)
