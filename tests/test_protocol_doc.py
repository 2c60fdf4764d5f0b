"""docs/protocol.md keeps up with the wire: every message, field, enum
value and RPC of swarm.v1 is described there, the authorization table
says what authz.RULES enforces, and the limits a third-party drone must
know are the ones the code applies."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

from swarm import grpcopts, pki
from swarm.agent import link
from swarm.controller import authz, bounds, domain, serde, staging
from swarm.controller.ca import RSA_BITS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"
PROTOS = ROOT / "protos" / "swarm" / "v1"
HEADING = re.compile(r"^(#{1,6}) ")
MESSAGE_HEADING = re.compile(r"^#### `(\w+)`\s*$")
AUTHZ_ROW = re.compile(r"^\| `(/swarm\.v1\.[\w.]+/\w+)` \| ([^|]*) \|")


def proto_files() -> list[FileDescriptor]:
    files = []
    for proto in sorted(PROTOS.glob("*.proto")):
        module = importlib.import_module(f"swarm.v1.{proto.stem}_pb2")
        files.append(module.DESCRIPTOR)
    return files


def sections(text: str) -> dict[str, str]:
    """The text under each ``#### `Name` `` heading, up to the next heading."""
    found: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "# end"]:
        if HEADING.match(line):
            if name is not None:
                found[name] = "\n".join(lines)
            match = MESSAGE_HEADING.match(line)
            name, lines = (match.group(1) if match else None), []
        elif name is not None:
            lines.append(line)
    return found


def enum_values(enum: EnumDescriptor) -> list[str]:
    return [value.name for value in enum.values]


def test_every_message_field_and_enum_value_is_described() -> None:
    """Each message and top-level enum has a ``#### `Name` `` section that
    names each of its fields (and nested enum values) in backticks."""
    described = sections(DOC.read_text())
    missing: list[str] = []

    def check(name: str, words: list[str]) -> None:
        section = described.get(name)
        if section is None:
            missing.append(f"section #### `{name}`")
            return
        missing.extend(f"{name}.{word}" for word in words if f"`{word}`" not in section)

    for file in proto_files():
        message: Descriptor
        for message in file.message_types_by_name.values():
            words = [field.name for field in message.fields]
            for nested in message.enum_types:
                words += enum_values(nested)
            check(message.name, words)
        for enum in file.enum_types_by_name.values():
            check(enum.name, enum_values(enum))
    assert not missing, f"docs/protocol.md does not describe: {', '.join(missing)}"


def test_the_authorization_table_is_what_authz_enforces() -> None:
    """One row per RPC, naming exactly the identity kinds RULES allows."""
    rows: dict[str, frozenset[str]] = {}
    for line in DOC.read_text().splitlines():
        match = AUTHZ_ROW.match(line)
        if match:
            rows[match.group(1)] = frozenset(re.findall(r"`(\w+)`", match.group(2)))
    methods = {
        f"/{service.full_name}/{method.name}"
        for file in proto_files()
        for service in file.services_by_name.values()
        for method in service.methods
    }
    assert methods == set(authz.RULES), "every RPC needs a rule in swarm.controller.authz.RULES"
    undocumented = sorted(methods - set(rows))
    assert not undocumented, f"docs/protocol.md has no authorization row for {undocumented}"
    wrong = {m: (sorted(rows[m]), sorted(authz.RULES[m])) for m in methods if rows[m] != authz.RULES[m]}
    assert not wrong, f"docs/protocol.md says (doc, code): {wrong}"


def test_the_limits_a_drone_must_know_are_the_codes() -> None:
    text = DOC.read_text()
    refused = link.REFUSED_BACKOFF
    limits = {
        "drone id pattern": domain.ID_RE.pattern,
        "drone name pattern": domain.NAME_RE.pattern,
        "heartbeat interval range": f"{serde.MIN_INTERVAL_MS}..{serde.MAX_INTERVAL_MS}",
        "checks read per pong": f"the first {serde.MAX_CHECKS} with a non-empty name",
        "identity URI": f"`{pki.DRONE_URI_PREFIX}<drone id>`",
        "artifact file name pattern": staging.FILENAME_RE.pattern,
        "RSA key sizes": f"RSA, {RSA_BITS[0]} to {RSA_BITS[1]} bits",
        "keepalive time": f"`grpc.keepalive_time_ms`\n{grpcopts.KEEPALIVE_TIME_MS}",
        "keepalive timeout": f"`grpc.http2.ping_timeout_ms` {grpcopts.KEEPALIVE_TIMEOUT_MS}",
        "refused backoff": f"initial {refused.initial:g} s and cap {refused.cap:g} s",
        "protocol errors per window": f"the first {bounds.NOISE_ALLOWANCE} `protocol_error` events",
    }
    # The doc wraps lines; compare with runs of whitespace made one space.
    flat = " ".join(text.split())
    wrong = [what for what, value in limits.items() if " ".join(value.split()) not in flat]
    assert not wrong, f"docs/protocol.md does not state the code's {', '.join(wrong)}"


def test_the_refusals_an_agent_backs_off_from_are_the_agents() -> None:
    """The doc's *Refused* paragraph (§8) names each status the Python agent
    takes as a refusal, and no other."""
    text = DOC.read_text()
    paragraph = text[text.index("**Refused.**") :].split("\n\n", 1)[0]
    named = set(re.findall(r"`([A-Z_]+)`", paragraph))
    assert named == {code.name for code in link.REFUSED}, paragraph


def test_every_proto_points_to_the_spec() -> None:
    missing = [p.name for p in PROTOS.glob("*.proto") if "docs/protocol.md" not in p.read_text()]
    assert not missing, f"the header comment of {missing} should point to docs/protocol.md"
