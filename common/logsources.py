"""The names of log sources, shared by the controller (which checks a
request before asking a drone) and the agent (which checks it again).

A source is a name, never a path. Anything shaped like a path (a leading
slash, an empty, ``.`` or ``..`` segment, characters outside the name set)
is refused as invalid; a well-formed name that no source answers to is
not found.

Drone sources: ``agent``, ``build/<job or build id>``,
``portage/<category>/<package>``. Controller source: ``control-plane``.
"""

from __future__ import annotations

import re

CONTROL_PLANE = "control-plane"
SEGMENT_RE = re.compile(r"^[A-Za-z0-9+_][A-Za-z0-9+_.:-]{0,127}\Z")
DRONE_SOURCE_RE = re.compile(
    r"^(?:agent"
    r"|build/(?P<id>[jb]-[0-9a-f]{12})"
    r"|portage/(?P<category>[A-Za-z0-9+_][A-Za-z0-9+_.-]{0,63})/(?P<package>[A-Za-z0-9+_][A-Za-z0-9+_-]{0,127}))$"
)
DRONE_SOURCES = "agent, build/<job or build id>, portage/<category>/<package>"
MAX_SOURCE = 256


def path_like(source: str) -> bool:
    """True for anything that is not a plain name of at most three segments."""
    if not source or len(source) > MAX_SOURCE:
        return True
    segments = source.split("/")
    return len(segments) > 3 or not all(SEGMENT_RE.match(s) and s not in (".", "..") for s in segments)
