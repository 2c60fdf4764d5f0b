"""The committed swarm.v1 code matches what protoc makes of protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "protos" / "swarm" / "v1"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "genproto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    fresh = {p.name: p.read_text() for p in (tmp_path / "swarm" / "v1").iterdir()}
    committed = {
        p.name: p.read_text()
        for p in GENERATED.iterdir()
        if p.name.endswith((".py", ".pyi")) and p.name != "__init__.py"
    }
    assert set(fresh) == set(committed), "run `make proto` and commit the result"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run `make proto` and commit the result"


def test_every_proto_says_package_swarm_v1() -> None:
    for proto in GENERATED.glob("*.proto"):
        assert "package swarm.v1;" in proto.read_text(), proto.name
