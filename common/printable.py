"""Text a peer reported, made safe to store and show.

A drone's Hello, heartbeats, pongs and channel closes carry free text
(host name, versions, reasons) that ends up in the database, the event
log, the API and the console. Terminal escapes there recolour or rewrite
an admin's terminal (``swarm-cli``, ``less`` on a log), bidi overrides
make a name read backwards in the console, and a NUL cuts a string short
in C-based readers. ``printable`` removes all of them before anything is
stored: whole ANSI escape sequences (CSI, OSC and the two-byte ones), then
every remaining C0 and C1 control, DEL, Unicode format characters (bidi
embeddings, overrides and isolates, zero-width characters, the BOM) and
line and paragraph separators. Ordinary text, ASCII or not, is returned
unchanged without being copied.
"""

from __future__ import annotations

import re
import unicodedata

# ESC [ params intermediates final; ESC ] text (BEL or ST); ESC and one
# byte; and the C1 form of CSI. A sequence cut short at the end of the
# string is removed as far as it goes.
_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -~]?"
)
# Cc: C0, DEL, C1. Cf: bidi controls, zero-width characters, BOM, soft hyphen.
# Zl, Zp: line and paragraph separators.
_STRIPPED = frozenset({"Cc", "Cf", "Zl", "Zp"})


def printable(text: str, limit: int | None = None, *, keep: str = "") -> str:
    """``text`` without escape sequences and control characters (those in
    ``keep``, say ``"\\n\\t"`` for a multi-line reason, stay), then cut to
    ``limit`` characters."""
    if not text.isprintable():
        text = _ESCAPE.sub("", text) if "\x1b" in text or "\x9b" in text else text
        text = "".join(c for c in text if c in keep or unicodedata.category(c) not in _STRIPPED)
    return text if limit is None else text[:limit]
