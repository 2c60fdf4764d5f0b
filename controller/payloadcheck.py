"""What an uploaded payload must be, per kind, checked before it is kept.

- ``agent``: a wheel (a zip) or an sdist (a tar) of this project: its
  metadata (``*.dist-info/METADATA``, or ``PKG-INFO`` at the sdist's top,
  else there the ``pyproject.toml`` of the release tarball ``make dist``
  writes, which has no PKG-INFO) names ``build-swarm``.
- ``agent-config``: TOML that the agent takes as its configuration (the
  agent's own loader and checks, so what passes here starts an agent).
- ``portage-config``: a tar of relative paths under ``etc/portage``:
  regular files and directories only (no links, no devices, no ``..``), so
  unpacking it on a drone cannot write anywhere else.

Every function blocks (it reads the file): call them from a thread. A
refusal is InvalidArgument with one line saying why.
"""

from __future__ import annotations

import argparse
import lzma
import re
import tarfile
import tomllib
import zipfile
import zlib
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

from swarm.config import ConfigError, resolve
from swarm.controller.errors import InvalidArgument
from swarm.payloadsig import AGENT, AGENT_CONFIG, PORTAGE_CONFIG

PROJECT = "build-swarm"
PORTAGE_ROOT = ("etc", "portage")
MAX_MEMBERS = 10_000
MAX_METADATA = 1 << 20  # bytes of a METADATA, PKG-INFO or pyproject.toml read
# What reading a damaged archive may raise besides its module's own error:
# a compressed stream that ends early or does not inflate, an encrypted or
# unsupported zip member.
ARCHIVE_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    ValueError,
    RuntimeError,
    NotImplementedError,
)
METADATA_RE = re.compile(r"[^/]+\.dist-info/METADATA")
PKG_INFO_RE = re.compile(r"[^/]+/PKG-INFO")
PYPROJECT_RE = re.compile(r"[^/]+/pyproject\.toml")


def check(kind: str, path: Path) -> None:
    if kind == AGENT:
        check_agent(path)
    elif kind == AGENT_CONFIG:
        check_agent_config(path)
    elif kind == PORTAGE_CONFIG:
        check_portage_config(path)
    else:
        raise InvalidArgument(f"unknown payload kind {kind[:40]!r}")


def _why(exc: BaseException) -> str:
    """An archive library's complaint, as one short line (tarfile's lists
    every compression it tried, a line each)."""
    if isinstance(exc, tarfile.ReadError) and "\n" in str(exc):
        return "not a tar, plain or compressed with gzip, bzip2 or xz"
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names_project(metadata: bytes, where: str) -> None:
    headers = HeaderParser().parsestr(metadata.decode("utf-8", errors="replace"))
    name = headers.get("Name", "")
    if _normalized(name) != PROJECT:
        raise InvalidArgument(f"an agent payload must be a {PROJECT} package; {where} names {name[:60]!r}")


def check_agent(path: Path) -> None:
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as wheel:
                found = [i for i in wheel.infolist() if METADATA_RE.fullmatch(i.filename)]
                if len(found) != 1 or found[0].file_size > MAX_METADATA:
                    raise InvalidArgument("an agent wheel must hold exactly one *.dist-info/METADATA")
                _names_project(wheel.read(found[0]), found[0].filename)
                bad = wheel.testzip()
        except ARCHIVE_ERRORS as exc:
            raise InvalidArgument(f"the agent wheel does not read as a zip: {_why(exc)}") from None
        if bad is not None:
            raise InvalidArgument(f"the agent wheel's {bad[:100]} is corrupt")
        return
    try:
        with tarfile.open(path, "r:*") as sdist:
            pkg_info = pyproject = None
            for count, info in enumerate(sdist):
                if count >= MAX_MEMBERS:
                    raise InvalidArgument(f"an agent sdist of more than {MAX_MEMBERS} files")
                if not info.isfile() or info.size > MAX_METADATA:
                    continue
                if PKG_INFO_RE.fullmatch(info.name):
                    pkg_info = info
                    break
                if pyproject is None and PYPROJECT_RE.fullmatch(info.name):
                    pyproject = info
            member = pkg_info or pyproject
            if member is None:
                raise InvalidArgument(
                    "an agent sdist must have PKG-INFO or pyproject.toml in its top directory"
                )
            extracted = sdist.extractfile(member)
            assert extracted is not None  # a regular file
            if member is pkg_info:
                _names_project(extracted.read(), member.name)
            else:
                _pyproject_names_project(extracted.read(), member.name)
    except ARCHIVE_ERRORS as exc:
        raise InvalidArgument(
            f"an agent payload must be a wheel (zip) or an sdist (tar): {_why(exc)}"
        ) from None


def _pyproject_names_project(data: bytes, where: str) -> None:
    try:
        project = tomllib.loads(data.decode("utf-8", errors="replace")).get("project", {})
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"the agent sdist's {where} is not TOML: {_why(exc)}") from None
    name = project.get("name", "") if isinstance(project, dict) else ""
    if not isinstance(name, str) or _normalized(name) != PROJECT:
        raise InvalidArgument(
            f"an agent payload must be a {PROJECT} package; {where} names {str(name)[:60]!r}"
        )


def check_agent_config(path: Path) -> None:
    from swarm.agent.config import AgentConfig

    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"not an agent config: not UTF-8 text (byte {exc.start})") from None
    try:
        resolve(
            AgentConfig,
            argparse.Namespace(),
            env_prefix="",
            default_path=None,
            explicit_path=path,
            environ={},
        )
    except (ConfigError, TypeError, ValueError) as exc:
        # The loader names the file: ours is a temporary one, so say "the payload".
        # (A table where a number goes is a TypeError from int(), not a ConfigError.)
        why = " ".join(str(exc).replace(str(path), "the payload").split())[:300]
        raise InvalidArgument(f"not an agent config: {why}") from None


def _portage_path(name: str) -> str | None:
    """Why ``name`` may not be in a portage-config tar, or None."""
    pure = PurePosixPath(name)
    parts = [p for p in pure.parts if p != "."]
    if pure.is_absolute():
        return "an absolute path"
    if ".." in parts:
        return "a '..' in it"
    if tuple(parts[:2]) != PORTAGE_ROOT and tuple(parts) not in ((), PORTAGE_ROOT[:1]):
        return "not under etc/portage"
    return None


def check_portage_config(path: Path) -> None:
    files = 0
    try:
        with tarfile.open(path, "r:*") as archive:
            for count, info in enumerate(archive):
                if count >= MAX_MEMBERS:
                    raise InvalidArgument(f"a portage-config of more than {MAX_MEMBERS} entries")
                shown = info.name[:100]
                why = _portage_path(info.name)
                if why is not None:
                    raise InvalidArgument(f"portage-config entry {shown!r}: {why}")
                if info.issym() or info.islnk():
                    raise InvalidArgument(f"portage-config entry {shown!r}: links are not allowed")
                if not (info.isfile() or info.isdir()):
                    raise InvalidArgument(f"portage-config entry {shown!r}: only files and directories")
                files += info.isfile()
    except ARCHIVE_ERRORS as exc:
        raise InvalidArgument(f"a portage-config payload must be a tar: {_why(exc)}") from None
    if not files:
        raise InvalidArgument("a portage-config payload must hold at least one file under etc/portage")
