"""The controller's core knows no protobuf: its adapters do the wire.

The core (fleet, health, healer, builds, pinger, channels, logs, the web
tier, the store, ...) takes what drones say as ``domain`` dataclasses (and
channel_frames) and speaks to a drone through the verbs of ``fleet.Link``;
serde and channel_serde convert both ways, and the modules below are the
only ones that may import protobuf. This reads
the imports of every module; none is executed.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from swarm.controller import fleet
from swarm.controller.gateway import DroneSession

from fakes.links import FakeLink

CONTROLLER = Path(__file__).resolve().parent.parent / "controller"
PROTOBUF = ("swarm.v1", "google.protobuf")

# Module (relative to controller/) -> why it may import protobuf.
ADAPTERS = {
    "serde.py": "the one place where swarm.v1 messages are read and built",
    "gateway.py": "the DroneGateway servicer: control streams, fleet.Link's verbs through serde",
    "buildsvc.py": "the Builds servicer (build logs, artifact uploads)",
    "enrollment.py": "the Enrollment servicer",
    "unparsable.py": "a gRPC server interceptor: requests that do not parse (DecodeError)",
    "app.py": "wires the servicers into the gRPC server",
    "channel_serde.py": "the one place where channel frames become shell.proto messages and back",
    "channelsvc.py": "the Channels servicer (the drones' ends of channels)",
    "payloadsvc.py": "the Payloads servicer (Fetch) and the signer of payload offers (PayloadMeta)",
}


def protobuf_imports(path: Path) -> list[str]:
    """The protobuf modules ``path`` imports, each with its line."""
    text = path.read_text()
    if not any(word in text for word in ("protobuf", "swarm.v1", "from swarm import")):
        return []  # cannot import one: not worth parsing (most modules)
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from swarm import v1" names the package in the alias.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found += [f"line {node.lineno}: {name}" for name in names if name.startswith(PROTOBUF)]
    return found


def test_no_module_of_the_core_imports_protobuf() -> None:
    offenders = {
        str(path.relative_to(CONTROLLER)): found
        for path in sorted(CONTROLLER.rglob("*.py"))
        if str(path.relative_to(CONTROLLER)) not in ADAPTERS and (found := protobuf_imports(path))
    }
    assert not offenders, (
        f"core modules import protobuf: {offenders}; take domain dataclasses and fleet.Link's "
        "verbs instead, and convert in serde (or, for a new servicer, list it in ADAPTERS)"
    )


def test_the_check_finds_an_import_of_protobuf(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nfrom swarm import v1\nfrom swarm.v1 import fleet_pb2\n"
        "if True:\n    from google.protobuf.message import DecodeError\n"
    )
    assert protobuf_imports(module) == [
        "line 2: swarm.v1",
        "line 3: swarm.v1",
        "line 3: swarm.v1.fleet_pb2",
        "line 5: google.protobuf.message",
        "line 5: google.protobuf.message.DecodeError",
    ]


def test_every_adapter_listed_exists() -> None:
    """A module renamed or split leaves no stale exemption behind."""
    missing = sorted(name for name in ADAPTERS if not (CONTROLLER / name).is_file())
    assert not missing, f"ADAPTERS lists modules that are gone: {missing}"


def test_the_gateway_and_the_tests_fake_implement_every_verb_of_the_link() -> None:
    verbs = {
        name
        for name, member in inspect.getmembers(fleet.Link, inspect.isfunction)
        if not name.startswith("_")
    }
    assert {"ping", "start_build", "cancel_build", "restart_service", "open_channel", "close"} <= verbs
    for implementation in (DroneSession, FakeLink):
        for verb in verbs:
            ours = getattr(implementation, verb, None)
            assert ours is not None, f"{implementation.__name__} has no {verb}"
            assert parameters(ours) == parameters(getattr(fleet.Link, verb)), (
                f"{implementation.__name__}.{verb} takes other parameters than fleet.Link.{verb}"
            )


def parameters(function: object) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults (the types are mypy's to compare)."""
    assert callable(function)
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]
