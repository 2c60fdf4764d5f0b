"""What drones report is stored and shown without control characters (swarm.printable)."""

from __future__ import annotations

import pytest

from swarm.backoff import Backoff
from swarm.printable import printable


@pytest.mark.parametrize(
    ("reported", "kept"),
    [
        ("\x1b[31mred\x1b[0m host", "red host"),  # SGR colours, whole
        ("\x1b]0;owned\x07title", "title"),  # OSC (window title), BEL-terminated
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink, ST-terminated
        ("a\x9b2Jb", "ab"),  # the C1 form of CSI
        ("cut\x1b[", "cut"),  # a sequence cut short at the end
        ("\u202eevil\u202c.exe", "evil.exe"),  # RTL override, pop
        ("\u2066iso\u2069\u200e\u200f\u061c", "iso"),  # isolates, marks
        ("nul\x00here\x07\x7f\x85", "nulhere"),  # NUL, BEL, DEL, NEL (C1)
        ("zero\u200bwidth\ufeff", "zerowidth"),  # zero-width space, BOM
        ("line\u2028para\u2029", "linepara"),
        ("tab\tnew\nline\r", "tabnewline"),
        ("plain ascii-1.0_x", "plain ascii-1.0_x"),
        ("héllo wörld 日本 \u00a0nbsp", "héllo wörld 日本 \u00a0nbsp"),  # ordinary text stays
        ("", ""),
    ],
)
def test_escapes_and_controls_are_removed_and_text_is_kept(reported: str, kept: str) -> None:
    assert printable(reported) == kept


def test_a_multi_line_reason_keeps_what_it_asks_for_and_the_limit_applies_after() -> None:
    assert printable("emerge failed:\n\x1b[1m\tline 2\x00", keep="\n\t") == "emerge failed:\n\tline 2"
    assert printable("\x1b[31m" + "x" * 10, 4) == "xxxx"


def test_ordinary_text_is_returned_as_it_is() -> None:
    text = "builder-01.lan"
    assert printable(text) is text


def test_a_refused_peer_waits_at_least_half_the_ceiling() -> None:
    backoff = Backoff(initial=30.0, cap=900.0)
    delays = [backoff.delay(n, least=0.5) for n in range(8) for _ in range(50)]
    ceilings = [backoff.ceiling(n) for n in range(8) for _ in range(50)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert ceilings[-1] == 900.0
