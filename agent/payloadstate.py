"""Which version of each payload kind this drone runs (Hello.payloads).

The config kinds are recorded in ``STATE_DIR/payloads/versions.json`` when
one is applied; the agent kind is where the running code is installed
(selfupdate.running_version): a floor agent runs version 0 whatever the
file says. Blocking file access: call from a thread, or at start.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from swarm.agent import selfupdate
from swarm.files import write_atomic
from swarm.payloadsig import AGENT, KINDS

log = logging.getLogger(__name__)

VERSIONS = "versions.json"


@dataclass(frozen=True, slots=True)
class Running:
    kind: str
    version: int  # 0: nothing deployed (what the drone was installed with)
    sha256: str = ""


class PayloadState:
    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / "payloads" / VERSIONS
        self._kinds: dict[str, Running] = {kind: Running(kind, 0) for kind in KINDS}
        try:
            raw = json.loads(self._path.read_text())
            for kind, entry in raw.items():
                if kind in KINDS and kind != AGENT:
                    self._kinds[kind] = Running(kind, int(entry["version"]), str(entry["sha256"]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s (%s): payload versions start from 0", self._path, exc)
        version, sha256 = selfupdate.running_version()
        self._kinds[AGENT] = Running(AGENT, version, sha256)

    def running(self, kind: str) -> Running:
        return self._kinds[kind]

    def all(self) -> tuple[Running, ...]:
        return tuple(self._kinds[kind] for kind in KINDS)

    def record(self, kind: str, version: int, sha256: str) -> None:
        """A config kind now runs ``version`` (the agent kind is where the code runs: never recorded)."""
        self._kinds[kind] = Running(kind, version, sha256)
        data = {k: {"version": r.version, "sha256": r.sha256} for k, r in self._kinds.items() if k != AGENT}
        write_atomic(self._path, json.dumps(data, indent=1).encode())
